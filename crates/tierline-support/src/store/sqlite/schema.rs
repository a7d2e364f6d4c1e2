//! The SQLite schema, as an ordered list of migrations; `PRAGMA user_version` records how many ran.

pub const MIGRATIONS: &[&str] = &[
    // 1: conversations, messages, API keys.
    "CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        customer TEXT NOT NULL,
        account TEXT NOT NULL,
        queue TEXT,
        tier TEXT,
        ai_exchanges INTEGER NOT NULL DEFAULT 0,
        escalated_at INTEGER,
        escalation_reason TEXT,
        first_human_reply_at INTEGER,
        resolved_at INTEGER,
        resolved_by TEXT,
        csat INTEGER
    );
    CREATE INDEX conversations_waiting ON conversations(status, queue, escalated_at);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES conversations(id),
        role TEXT NOT NULL,
        author TEXT,
        text TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        decision TEXT,
        embedding BLOB
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );",
    // 2: outcomes recorded at resolution, and reopenings.
    "ALTER TABLE conversations ADD COLUMN outcome TEXT;
    ALTER TABLE conversations ADD COLUMN reopened_count INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX conversations_created ON conversations(created_at);",
    // 3: labeled examples from resolutions, anomaly alerts, conversations by account.
    "CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at INTEGER NOT NULL,
        conversation_id TEXT REFERENCES conversations(id),
        head TEXT NOT NULL,
        text TEXT NOT NULL,
        label TEXT NOT NULL,
        predicted TEXT,
        kind TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        reviewed_at INTEGER
    );
    CREATE INDEX feedback_by_head ON feedback(head, status, id);
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        raised_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        active INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    ALTER TABLE conversations ADD COLUMN account_id TEXT GENERATED ALWAYS AS (json_extract(account, '$.id')) VIRTUAL;
    CREATE INDEX conversations_by_account ON conversations(account_id, created_at);",
    // 4: each conversation's first customer message marked, so tickets are read by index.
    "ALTER TABLE messages ADD COLUMN first_of_conversation INTEGER NOT NULL DEFAULT 0;
    UPDATE messages SET first_of_conversation = 1 WHERE id IN
        (SELECT MIN(id) FROM messages WHERE role = 'customer' GROUP BY conversation_id);
    CREATE INDEX messages_tickets ON messages(first_of_conversation, id);",
    // 5: a customer token (its SHA-256) per conversation, for the chat widget.
    "ALTER TABLE conversations ADD COLUMN token_hash TEXT;
    CREATE UNIQUE INDEX conversations_by_token ON conversations(token_hash) WHERE token_hash IS NOT NULL;",
    // 6: shared documents (the knowledge base's edits), versioned.
    "CREATE TABLE documents (name TEXT PRIMARY KEY, version INTEGER NOT NULL, body TEXT NOT NULL);",
    // 7: the audit log of admin actions.
    "CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    );",
    // 8: keys kept to some accounts' conversations (a JSON array; empty: every account).
    "ALTER TABLE api_keys ADD COLUMN accounts TEXT NOT NULL DEFAULT '[]';",
];
