"""Derives single-message training rows from the multi-turn scenarios in corpus/conversations.jsonl:
every turn that carries no signal becomes a no-signal example (the follow-ups, details and
thank-yous that a model trained on first messages has never seen), with its turn kind.

Run from the repository root: python3 models/triage/derive_turns.py
"""
import json

rows = []
with open("models/triage/corpus/conversations.jsonl", encoding="utf-8") as scenarios:
    for line in scenarios:
        scenario = json.loads(line)
        for number, (text, kind) in enumerate(zip(scenario["turns"], scenario["turn_kinds"]), start=1):
            if kind == "signal":
                continue
            rows.append({"id": f"{scenario['id']}-t{number}", "text": text, "signals": [], "turn": kind, "lang": scenario.get("lang", "en")})
with open("models/triage/corpus/conversation_turns.jsonl", "w", encoding="utf-8") as out:
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
print(len(rows), "turns")
