"""The data of `make demo-real` on Gemma 3 270M: answers that span several lines, and end.

The base model has never seen a chat, so SFT teaches it the ChatML turns of zephyr-7b-gemma-sft and to close its
answer with `<|im_end|>`; the answers are lists ("Here are three fruits:" then one item a line), so the demo's last
chat turn shows a multi-line reply that llama.cpp stops at `<|im_end|>`, not at its first newline. The preference
pairs for DiscoPOP prefer that list to one that runs on, repeating its items (the failure a small model falls into
when it does not end its turn). Two files, generated here deterministically and shipped:

- `recipes/data/lists-chat.jsonl`: conversations (`messages`), for `discopop sft`;
- `recipes/data/lists-preferences.jsonl`: `chosen`/`rejected` conversations, for `discopop align`.

    python -m discopop_cli.demo.lists [OUT_DIR]   # rewrites the shipped files (default) or writes them to OUT_DIR
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[2] / "recipes/data"
CHAT_FILE, PREFERENCES_FILE = "lists-chat.jsonl", "lists-preferences.jsonl"
SEED = 23

CATEGORIES = {
    "fruits": ["apple", "banana", "orange", "pear", "grape", "cherry", "mango", "peach", "plum", "lemon"],
    "vegetables": ["carrot", "potato", "onion", "pea", "cabbage", "spinach", "leek", "bean", "pepper", "tomato"],
    "colours": ["red", "blue", "green", "yellow", "orange", "purple", "pink", "white", "black", "brown"],
    "planets": ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"],
    "continents": ["Africa", "Asia", "Europe", "Australia", "Antarctica", "North America", "South America"],
    "oceans": ["the Pacific Ocean", "the Atlantic Ocean", "the Indian Ocean", "the Arctic Ocean"],
    "days of the week": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "months": ["January", "March", "May", "July", "September", "October", "November", "December"],
    "animals that live in the sea": ["whale", "dolphin", "shark", "octopus", "seal", "crab", "jellyfish", "turtle"],
    "farm animals": ["cow", "pig", "sheep", "goat", "horse", "chicken", "duck", "donkey"],
    "birds": ["robin", "sparrow", "eagle", "owl", "parrot", "swan", "penguin", "pigeon"],
    "musical instruments": ["piano", "guitar", "violin", "drum", "flute", "trumpet", "cello", "harp"],
    "sports": ["football", "tennis", "swimming", "cycling", "basketball", "rugby", "golf", "running"],
    "shapes": ["circle", "square", "triangle", "rectangle", "oval", "hexagon", "star", "diamond"],
    "countries in Europe": ["France", "Spain", "Italy", "Germany", "Poland", "Norway", "Greece", "Portugal"],
    "programming languages": ["Python", "C", "Java", "Rust", "Go", "JavaScript", "Haskell", "Ruby"],
    "metals": ["iron", "copper", "gold", "silver", "zinc", "tin", "lead", "aluminium"],
    "trees": ["oak", "pine", "birch", "maple", "willow", "beech", "cedar", "elm"],
    "flowers": ["rose", "tulip", "daisy", "lily", "sunflower", "orchid", "daffodil", "poppy"],
    "vehicles": ["car", "bus", "train", "bicycle", "lorry", "boat", "aeroplane", "tram"],
    "pieces of furniture": ["chair", "table", "bed", "sofa", "desk", "wardrobe", "shelf", "stool"],
    "kitchen tools": ["knife", "spoon", "whisk", "pan", "kettle", "grater", "ladle", "peeler"],
    "things you wear": ["shirt", "coat", "hat", "scarf", "shoes", "gloves", "socks", "jumper"],
    "board games": ["chess", "draughts", "backgammon", "Monopoly", "Scrabble", "Go", "Ludo", "Cluedo"],
}
NUMBERS = {2: "two", 3: "three", 4: "four"}
PER_CATEGORY = 8
ASKS = ["Name {n} {c}.", "List {n} {c}.", "Give me {n} {c}, one per line.", "Can you name {n} {c}?"]


def _answer(category: str, items: list[str]) -> str:
    lines = [f"{index}. {item[0].upper()}{item[1:]}" for index, item in enumerate(items, 1)]
    return f"Here are {NUMBERS[len(items)]} {category}:\n" + "\n".join(lines)


def _rows(rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, answer, a rambling answer that does not stop): every category asked several ways."""
    rows = []
    for category, pool in CATEGORIES.items():
        asked = [(ask, count) for ask in ASKS for count in NUMBERS]
        rng.shuffle(asked)
        for ask, count in asked[:PER_CATEGORY]:  # each question once: a held-out one is never a training one
            items = rng.sample(pool, count)
            question = ask.format(n=NUMBERS[count], c=category)
            answer = _answer(category, items)
            more = [*items, *items, *items]
            rambling = f"Here are {NUMBERS[count]} {category}:\n" + "\n".join(
                f"{index}. {item[0].upper()}{item[1:]}" for index, item in enumerate(more, 1)
            )
            rows.append((question, answer, rambling))
    rng.shuffle(rows)
    return rows


def conversations(seed: int = SEED) -> tuple[list[dict], list[dict]]:
    """(SFT conversations, preference pairs), in the shipped order.

    The conversations also hold one-sentence answers (the facts of `concise`): a turn ends after one line as well.
    """
    from discopop_cli.demo.concise import _questions

    rng = random.Random(seed)
    chats, pairs = [], []
    facts = [
        {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
        for question, answer in list(_questions(random.Random(seed)))[::3]
    ]
    for index, (question, answer, rambling) in enumerate(_rows(rng)):
        system = [{"role": "system", "content": "You are a helpful assistant."}] if index % 4 == 0 else []
        user = {"role": "user", "content": question}
        chats.append({"messages": [*system, user, {"role": "assistant", "content": answer}]})
        pairs.append(
            {
                "chosen": [*system, user, {"role": "assistant", "content": answer}],
                "rejected": [*system, user, {"role": "assistant", "content": rambling}],
            }
        )
    chats += facts
    rng.shuffle(chats)
    return chats, pairs


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else SHIPPED
    chats, pairs = conversations()
    (out / CHAT_FILE).write_text(_jsonl(chats), encoding="utf-8")
    (out / PREFERENCES_FILE).write_text(_jsonl(pairs), encoding="utf-8")
    print(f"{out / CHAT_FILE}: {len(chats)} conversations; {out / PREFERENCES_FILE}: {len(pairs)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
