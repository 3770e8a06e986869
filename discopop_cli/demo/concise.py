"""The preference set of `make demo-real`: concise answers preferred over rambling, repetitive ones.

Every pair has one user question and two answers carrying the same correct fact: `chosen` states it in one
sentence; `rejected` rambles, saying it again and again ("The capital of Poland is Warsaw. The capital of Poland is
Warsaw. ..."). The preference is clear and learnable from a few hundred pairs, and a held-out split tests that it
generalises to new questions. Repetition is the rambling chosen here because a base model finds it easy: per token,
SmolLM2-135M-Instruct rates the repeated answer above the concise one on most pairs (the length-normalised
accuracy has room to rise), where rambling filler ("Well, that is a really interesting question...") it already
rates below the concise answer on 98% of pairs.
The rows are generated here, deterministically, and shipped as `recipes/data/concise-preferences.jsonl`:

    python -m discopop_cli.demo.concise [OUT.jsonl]   # rewrites the shipped file (default) or OUT.jsonl
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[2] / "recipes/data/concise-preferences.jsonl"
SEED = 15
REPEATS = 6

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi", "Russia": "Moscow", "Canada": "Ottawa",
    "Egypt": "Cairo", "Kenya": "Nairobi", "Greece": "Athens", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Poland": "Warsaw", "Austria": "Vienna", "Ireland": "Dublin", "Peru": "Lima",
    "Chile": "Santiago", "Argentina": "Buenos Aires", "Mexico": "Mexico City", "Cuba": "Havana",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "Turkey": "Ankara", "Hungary": "Budapest", "Denmark": "Copenhagen",
    "Belgium": "Brussels", "the Netherlands": "Amsterdam", "Australia": "Canberra", "South Korea": "Seoul",
    "Iran": "Tehran", "Iraq": "Baghdad", "Nigeria": "Abuja", "Ghana": "Accra", "Morocco": "Rabat",
    "Switzerland": "Bern", "Czechia": "Prague",
}  # fmt: skip
COLOURS = {
    "the sky on a clear day": "blue", "fresh grass": "green", "a ripe banana": "yellow", "snow": "white",
    "coal": "black", "a ripe tomato": "red", "an orange": "orange", "a lemon": "yellow", "a polar bear": "white",
    "a crow": "black", "a strawberry": "red", "a carrot": "orange", "milk": "white", "a lime": "green",
    "a blueberry": "dark blue", "chocolate": "brown", "a flamingo": "pink", "a pumpkin": "orange",
}  # fmt: skip
SOUNDS = {
    "a dog": "barks", "a cat": "meows", "a cow": "moos", "a duck": "quacks", "a lion": "roars", "a sheep": "bleats",
    "a horse": "neighs", "a pig": "oinks", "an owl": "hoots", "a snake": "hisses", "a frog": "croaks",
    "a bee": "buzzes", "a wolf": "howls", "a mouse": "squeaks",
}  # fmt: skip
COUNTS = {
    "days are in a week": "There are 7 days in a week.", "months are in a year": "There are 12 months in a year.",
    "legs does a spider have": "A spider has 8 legs.", "legs does an insect have": "An insect has 6 legs.",
    "hours are in a day": "There are 24 hours in a day.", "minutes are in an hour": "There are 60 minutes in an hour.",
    "seconds are in a minute": "There are 60 seconds in a minute.", "sides does a triangle have": "A triangle has 3 sides.",
    "sides does a square have": "A square has 4 sides.", "sides does a hexagon have": "A hexagon has 6 sides.",
    "continents are there": "There are 7 continents.", "planets are in the solar system": "There are 8 planets in the solar system.",
    "days are in a leap year": "There are 366 days in a leap year.", "weeks are in a year": "There are 52 weeks in a year.",
    "legs does a dog have": "A dog has 4 legs.", "wheels does a bicycle have": "A bicycle has 2 wheels.",
    "strings does a standard guitar have": "A standard guitar has 6 strings.", "players are on a football team": "A football team has 11 players on the field.",
    "centimetres are in a metre": "There are 100 centimetres in a metre.", "grams are in a kilogram": "There are 1000 grams in a kilogram.",
}  # fmt: skip
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad", "light": "dark", "open": "closed",
    "early": "late", "full": "empty", "old": "young", "hard": "soft", "wet": "dry", "loud": "quiet", "rich": "poor",
    "strong": "weak", "high": "low", "thick": "thin", "clean": "dirty", "cheap": "expensive", "push": "pull",
}  # fmt: skip


def _questions(rng: random.Random) -> Iterator[tuple[str, str]]:
    """(question, one-sentence answer) for every fact above, then arithmetic to a few hundred in all."""
    for country, city in CAPITALS.items():
        yield f"What is the capital of {country}?", f"The capital of {country} is {city}."
    for thing, colour in COLOURS.items():
        yield f"What colour is {thing}?", f"{thing[0].upper()}{thing[1:]} is {colour}."
    for animal, sound in SOUNDS.items():
        yield f"What sound does {animal} make?", f"{animal[0].upper()}{animal[1:]} {sound}."
    for question, answer in COUNTS.items():
        yield f"How many {question}?", answer
    for word, opposite in OPPOSITES.items():
        yield f"What is the opposite of {word}?", f"The opposite of {word} is {opposite}."
    seen: set[tuple[str, int, int]] = set()
    while len(seen) < 200:
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        op = rng.choice(["plus", "times", "minus"])
        if (op, a, b) in seen or (op == "minus" and a < b):
            continue
        seen.add((op, a, b))
        result = {"plus": a + b, "times": a * b, "minus": a - b}[op]
        yield f"What is {a} {op} {b}?", f"{a} {op} {b} is {result}."


def pairs(seed: int = SEED) -> list[dict[str, list[dict[str, str]]]]:
    """The shipped rows, in the shipped order: conversational `chosen`/`rejected` with the question inside."""
    rng = random.Random(seed)
    rows = []
    for question, answer in _questions(rng):
        rambling = " ".join([answer] * REPEATS)
        user = {"role": "user", "content": question}
        rows.append(
            {
                "chosen": [user, {"role": "assistant", "content": answer}],
                "rejected": [user, {"role": "assistant", "content": rambling}],
            }
        )
    rng.shuffle(rows)
    return rows


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else SHIPPED
    out.write_text(to_jsonl(pairs()), encoding="utf-8")
    print(f"{out}: {len(pairs())} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
