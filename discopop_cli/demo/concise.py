"""The preference set of `make demo-real`: concise answers preferred over rambling ones.

Every pair has one user question and two answers carrying the same correct fact: `chosen` states it in one
sentence, `rejected` buries it between filler ("Well, that is a really interesting question..."). The preference is
clear and learnable from a few hundred pairs, and a held-out split tests that it generalises to new questions.
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

INTROS = [
    "Well, that is a really interesting question, and I am so glad that you asked it, because there is honestly quite "
    "a lot that one could say about it before getting to the point.",
    "Oh, what a great question! Let me take a moment to think about it very carefully, because I want to make "
    "absolutely sure that I give you a complete and thorough answer.",
    "Thank you so much for asking me this. It is the kind of question that people have wondered about for a long "
    "time, and I think it deserves a proper, careful and detailed explanation.",
    "Hmm, okay, so, this is something that I find genuinely fascinating, and before I answer I would like to say a "
    "few words about why it is such a wonderful thing to be curious about.",
    "Great question! You know, a lot of people ask me about this, and I always enjoy it, because it gives me the "
    "chance to talk about it at some length, which I really love doing.",
    "Let me start by saying that there are many different ways to look at this, and I want to walk you through my "
    "thinking step by step so that nothing important gets left out along the way.",
]
BRIDGES = [
    "So, after all of that, and to put it as simply as I possibly can:",
    "Anyway, getting back to what you actually asked, the answer is this:",
    "Now, with all of that said, here is the thing that you wanted to know:",
    "So, to finally get to the heart of the matter:",
]
OUTROS = [
    "I really hope that this long explanation was helpful to you, and please do let me know if you would like me to "
    "go over any part of it again in even more detail.",
    "Of course, there is always more that could be said, and I would be more than happy to keep talking about it for "
    "as long as you like, so just ask me anything else.",
    "Anyway, that is more or less everything I wanted to say about it for now, although I could probably go on about "
    "it for quite a while longer if you were interested.",
    "I know that was a rather long way of getting there, but I think it is important to be thorough, and I hope you "
    "enjoyed reading it as much as I enjoyed writing it.",
]


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
        rambling = " ".join([rng.choice(INTROS), rng.choice(BRIDGES), answer, rng.choice(OUTROS)])
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
