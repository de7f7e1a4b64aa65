"""Write the NER demo samples in sample_data/: English sentences written for nlptool from templates and name lists.

Every sentence comes from a template below filled with names from the lists below (all written for this project;
the names are common first names, surnames and real place names, the organisations invented or generic). Entity
types: PER, LOC, ORG; an organisation named after a place ("University of Leeds", "Bergen City Council") also holds
that place as a nested LOC, so the sample exercises nested spans.

Outputs (seeded, so the files are reproducible):
- ``sample_data/ner_train_tokens.jsonl``: 160 training sentences in the token-span format (``tokens`` +
  ``entity_mentions``, as GENIA's jsonlines), to show ``nlptool ner convert --from token-spans``;
- ``sample_data/ner_dev.jsonl``: 60 held-out sentences in nlptool's canonical format (character offsets), built from
  other template/name combinations, a third of the names unseen in training;
- ``sample_data/ner_texts.txt``: 8 unlabelled sentences for ``nlptool ner predict``.

Example:
    python benchmarks/make_ner_sample.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "sample_data"

FIRST = [
    "Anna",
    "Mark",
    "Priya",
    "Tom",
    "Maria",
    "Kenji",
    "Laura",
    "David",
    "Sofia",
    "Omar",
    "Elena",
    "James",
    "Fatima",
    "Lucas",
    "Grace",
    "Ivan",
    "Nora",
    "Peter",
    "Aisha",
    "Carlos",
]
LAST = [
    "Berg",
    "Smith",
    "Patel",
    "Novak",
    "Garcia",
    "Tanaka",
    "Fischer",
    "Brown",
    "Rossi",
    "Haddad",
    "Ivanova",
    "Walker",
    "Khan",
    "Silva",
    "Lee",
    "Petrov",
    "Olsen",
    "Muller",
    "Bello",
    "Reyes",
]
PLACES = [
    "Oslo",
    "Leeds",
    "Lisbon",
    "Toronto",
    "Nairobi",
    "Kyoto",
    "Bergen",
    "Lyon",
    "Denver",
    "Cardiff",
    "Porto",
    "Dublin",
    "Seville",
    "Adelaide",
    "Quebec",
    "Malmo",
    "Bologna",
    "Tampere",
    "Hobart",
    "Galway",
]
COMPANIES = [
    "Northwind Labs",
    "Bluefield Energy",
    "Acme Robotics",
    "Redstone Foods",
    "Silverline Bank",
    "Harbor Media",
    "Greenleaf Pharma",
    "Orbit Systems",
    "Maple Logistics",
    "Crescent Motors",
    "Summit Software",
    "Riverside Textiles",
]
# organisations that contain a place (nested LOC): pattern, with {} for the place
PLACE_ORGS = [
    "University of {}",
    "{} City Council",
    "Bank of {}",
    "{} General Hospital",
    "{} Football Club",
    "{} Chamber of Commerce",
]

TEMPLATES = [
    "{PER} visited {LOC} last week .",
    "{PER} works for {ORG} in {LOC} .",
    "{ORG} opened a new office in {LOC} on Monday .",
    "{PER} and {PER} met at the station in {LOC} .",
    "The report by {PER} was published by {ORG} .",
    "{PER} moved from {LOC} to {LOC} in the spring .",
    "Shares of {ORG} rose after the news from {LOC} .",
    "{PER} said that {ORG} will hire more staff .",
    "Heavy rain closed several roads around {LOC} .",
    "{ORG} and {ORG} signed a supply deal .",
    "After the match , {PER} thanked the fans in {LOC} .",
    "The mayor of {LOC} , {PER} , opened the new bridge .",
    "Nobody expected the meeting to end so early .",
    "{PER} studied at {ORG} before joining {ORG} .",
    "A spokesperson for {ORG} declined to comment .",
    "{PER} will give a talk in {LOC} next month .",
]


def _fill(template: str, rng: random.Random, names: dict) -> tuple[list[str], list[dict]]:
    tokens: list[str] = []
    mentions: list[dict] = []
    for part in template.split(" "):
        if part == "{PER}":
            name = f"{rng.choice(names['first'])} {rng.choice(names['last'])}".split(" ")
            mentions.append({"start": len(tokens), "end": len(tokens) + len(name), "entity_type": "PER"})
            tokens += name
        elif part == "{LOC}":
            mentions.append({"start": len(tokens), "end": len(tokens) + 1, "entity_type": "LOC"})
            tokens.append(rng.choice(names["places"]))
        elif part == "{ORG}":
            if rng.random() < 0.5:
                pattern = rng.choice(PLACE_ORGS)
                place = rng.choice(names["places"])
                words = pattern.format(place).split(" ")
                start = len(tokens)
                mentions.append({"start": start, "end": start + len(words), "entity_type": "ORG"})
                k = words.index(place)
                mentions.append({"start": start + k, "end": start + k + 1, "entity_type": "LOC"})
                tokens += words
            else:
                words = rng.choice(names["companies"]).split(" ")
                mentions.append({"start": len(tokens), "end": len(tokens) + len(words), "entity_type": "ORG"})
                tokens += words
        else:
            tokens.append(part)
    mentions.sort(key=lambda m: (m["start"], -m["end"]))
    return tokens, mentions


def _canonical(tokens: list[str], mentions: list[dict]) -> dict:
    starts, pos = [], 0
    for t in tokens:
        starts.append(pos)
        pos += len(t) + 1
    ents = [
        {
            "start": starts[m["start"]],
            "end": starts[m["end"] - 1] + len(tokens[m["end"] - 1]),
            "label": m["entity_type"],
        }
        for m in mentions
    ]
    return {"text": " ".join(tokens), "entities": ents}


def main() -> None:
    rng = random.Random(2026)
    seen = {
        "first": FIRST[:14],
        "last": LAST[:14],
        "places": PLACES[:14],
        "companies": COMPANIES[:8],
    }
    everything = {"first": FIRST, "last": LAST, "places": PLACES, "companies": COMPANIES}
    with open(OUT / "ner_train_tokens.jsonl", "w", encoding="utf-8") as fh:
        for k in range(160):
            tokens, mentions = _fill(TEMPLATES[k % len(TEMPLATES)], rng, seen)
            fh.write(json.dumps({"tokens": tokens, "sent_id": f"train-{k}", "entity_mentions": mentions}) + "\n")
    with open(OUT / "ner_dev.jsonl", "w", encoding="utf-8") as fh:
        for k in range(60):
            tokens, mentions = _fill(TEMPLATES[(k * 7 + 3) % len(TEMPLATES)], rng, everything)
            fh.write(json.dumps(_canonical(tokens, mentions)) + "\n")
    with open(OUT / "ner_texts.txt", "w", encoding="utf-8") as fh:
        for k in range(8):
            tokens, _ = _fill(TEMPLATES[(k * 5 + 1) % len(TEMPLATES)], rng, everything)
            fh.write(" ".join(tokens) + "\n")


if __name__ == "__main__":
    main()
