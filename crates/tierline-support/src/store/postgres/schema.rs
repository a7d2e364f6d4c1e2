//! The PostgreSQL schema, as an ordered list of migrations recorded in `schema_migrations`.
//! Nodes starting together take one advisory lock for the whole check, so each migration runs
//! once.

pub const MIGRATIONS: &[&str] = &[
    // 1: the same tables as the embedded store.
    "CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        status TEXT NOT NULL,
        customer TEXT NOT NULL,
        account TEXT NOT NULL,
        account_id TEXT,
        queue TEXT,
        tier TEXT,
        ai_exchanges INTEGER NOT NULL DEFAULT 0,
        escalated_at BIGINT,
        escalation_reason TEXT,
        first_human_reply_at BIGINT,
        resolved_at BIGINT,
        resolved_by TEXT,
        csat SMALLINT,
        outcome TEXT,
        reopened_count INTEGER NOT NULL DEFAULT 0,
        token_hash TEXT UNIQUE
    );
    CREATE INDEX conversations_waiting ON conversations(status, queue, escalated_at);
    CREATE INDEX conversations_created ON conversations(created_at);
    CREATE INDEX conversations_by_account ON conversations(account_id, created_at);
    CREATE TABLE messages (
        id BIGSERIAL PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id),
        role TEXT NOT NULL,
        author TEXT,
        text TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        decision TEXT,
        embedding BYTEA,
        first_of_conversation BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    CREATE INDEX messages_tickets ON messages(id) WHERE first_of_conversation;
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE TABLE feedback (
        id BIGSERIAL PRIMARY KEY,
        created_at BIGINT NOT NULL,
        conversation_id TEXT REFERENCES conversations(id),
        head TEXT NOT NULL,
        text TEXT NOT NULL,
        label TEXT NOT NULL,
        predicted TEXT,
        kind TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        reviewed_at BIGINT
    );
    CREATE INDEX feedback_by_head ON feedback(head, status, id);
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        raised_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        active BOOLEAN NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE documents (
        name TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        body TEXT NOT NULL
    );",
    // 2: the audit log of admin actions.
    "CREATE TABLE audit (
        id BIGSERIAL PRIMARY KEY,
        at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    );",
    // 3: keys kept to some accounts' conversations (a JSON array; empty: every account).
    "ALTER TABLE api_keys ADD COLUMN accounts TEXT NOT NULL DEFAULT '[]';",
];
