"""Generate the demo world: fictional kingdoms, cities, rivers, mountains, inventors, ships and guilds.

`python -m dagster_project.world.generate --out data/demo_world --seed 0` writes, deterministically:

- `passages.jsonl`  {"id", "title", "text"}: one passage per entity, several facts each, phrased with
  varied sentence templates (the grounding corpus the retrieve stage indexes);
- `queries.txt`     retrieval queries, one per entity type and attribute;
- `gold_test.jsonl` {"id", "context", "question", "answer", "category"}: questions about HELD-OUT
  entities whose passages are not in `passages.jsonl`, so a student must read the context to answer.

Every name is built from syllables, so nothing here is a real-world fact a model could have memorised.
"""

import argparse
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

SYLLABLES = [
    "ka",
    "lor",
    "ven",
    "dra",
    "mi",
    "tos",
    "bel",
    "ur",
    "an",
    "ith",
    "gar",
    "sel",
    "mor",
    "quin",
    "tha",
    "rel",
    "os",
    "vy",
    "zan",
    "del",
    "kor",
    "ash",
    "bri",
    "ul",
    "fen",
    "nar",
    "pe",
    "sko",
    "tir",
    "wen",
    "ya",
    "ro",
    "hal",
    "im",
    "cas",
    "eld",
    "ny",
    "or",
    "vel",
    "ga",
]

REGIONS = [
    "northern marches",
    "eastern steppe",
    "southern coast",
    "western highlands",
    "inner valleys",
    "salt flats",
    "pine hills",
    "river delta",
]
PRODUCTS = [
    "silver lace",
    "blue glass",
    "salted fish",
    "copper bells",
    "wool carpets",
    "rose oil",
    "painted tiles",
    "black tea",
    "amber beads",
    "iron nails",
    "honey cakes",
    "paper lanterns",
]
INVENTIONS = [
    "tide clock",
    "brass loom",
    "water pump",
    "signal lamp",
    "printing frame",
    "wind organ",
    "star compass",
    "steam kettle",
    "glass lens",
    "folding bridge",
    "rope lift",
    "ice cellar",
]
CARGOES = ["spices", "timber", "salt", "grain", "wine", "marble", "furs", "dyed cloth", "olive oil", "tin"]
TRADES = [
    "glassblowing",
    "rope making",
    "cartography",
    "clockmaking",
    "dyeing",
    "bookbinding",
    "masonry",
    "shipbuilding",
    "weaving",
    "brewing",
    "bell founding",
    "lens grinding",
]
SHIP_KINDS = ["merchant ship", "three-masted ship", "river barge", "fishing ketch", "fast courier ship"]
ADJECTIVES = ["quiet", "windy", "busy", "ancient", "proud", "crowded", "misty", "sunlit"]

# Sentence templates per (entity type, fact). `{s}` is the subject's name, `{v}` the fact's value.
# The first fact of each type opens the passage and always names the subject.
TEMPLATES: dict[str, dict[str, list[str]]] = {
    "kingdom": {
        "region": ["{s} is a kingdom in the {v}.", "{s} is an old kingdom on the {v}."],
        "capital": ["The capital of {s} is {v}.", "Its capital is {v}.", "{v} serves as the capital of {s}."],
        "founded_year": [
            "{s} was founded in {v}.",
            "The kingdom was founded in {v}.",
            "Chroniclers date its founding to the year {v}.",
        ],
        "ruler": [
            "It is ruled by {v}.",
            "The current ruler of {s} is {v}.",
            "{v} sits on the throne of {s}.",
        ],
        "population": [
            "About {v} people live in {s}.",
            "The kingdom has a population of {v}.",
            "Its population is estimated at {v}.",
        ],
    },
    "city": {
        "kingdom": [
            "{s} is a city in the kingdom of {v}.",
            "{s} is a {adj} city belonging to the kingdom of {v}.",
        ],
        "river": [
            "The city lies on the {v} river.",
            "{s} stands on the banks of the {v} river.",
            "The {v} river flows through the city.",
        ],
        "founded_year": ["{s} was founded in {v}.", "The city was founded in {v}."],
        "population": ["The city has a population of {v}.", "About {v} people live in {s}."],
        "known_for": [
            "{s} is famous for its {v}.",
            "The city is known for its {v}.",
            "Merchants travel to {s} for its {v}.",
        ],
    },
    "river": {
        "mouth": [
            "The {s} flows across the {adj} lowlands and empties into the {v}.",
            "The {s} is a {adj} river that flows into the {v}.",
        ],
        "length": ["The {s} is {v} long.", "It runs for {v}.", "Its total length is {v}."],
        "source": [
            "It rises on {v}.",
            "The river has its source on {v}.",
            "Its source lies on the slopes of {v}.",
        ],
        "city": ["The river passes the city of {v}.", "The city of {v} lies on its banks."],
    },
    "mountain": {
        "range": ["{s} is a mountain in the {v}.", "{s} is the highest peak of the {v}."],
        "height": ["It is {v} high.", "{s} stands {v} tall.", "The summit reaches {v} above the sea."],
        "first_climber": [
            "It was first climbed by {v}.",
            "{v} made the first ascent of {s}.",
            "The first person to reach the summit was {v}.",
        ],
        "ascent_year": ["The first ascent took place in {v}.", "{s} was first climbed in {v}."],
    },
    "inventor": {
        "birthplace": ["{s} was an inventor born in {v}.", "{s} was an inventor born in the city of {v}."],
        "invention": [
            "{s} invented the {v}.",
            "The inventor is best remembered for the {v}.",
            "The invention of the {v} made {s} famous.",
        ],
        "invention_year": ["The invention was first demonstrated in {v}.", "It was first shown in {v}."],
        "guild": ["{s} was a member of the {v}.", "The inventor belonged to the {v}."],
    },
    "ship": {
        "kind": ["{s} is a {v}.", "{s} is a {adj} {v}."],
        "captain": ["{s} is commanded by Captain {v}.", "{v} is the captain of {s}.", "Her captain is {v}."],
        "launch_year": [
            "{s} was launched in {v}.",
            "The ship was launched in {v}.",
            "She first put to sea in {v}.",
        ],
        "home_port": [
            "Her home port is {v}.",
            "{s} sails from the port of {v}.",
            "The ship is based in the harbour of {v}.",
        ],
        "cargo": [
            "She usually carries {v}.",
            "{s} carries cargoes of {v}.",
            "The ship trades mainly in {v}.",
        ],
    },
    "guild": {
        "trade": [
            "The {s} is a guild devoted to {v}.",
            "The {s} is a guild that practises the trade of {v}.",
        ],
        "founder": ["It was founded by {v}.", "The guild was founded by {v}.", "{v} founded the {s}."],
        "founded_year": [
            "The guild was founded in {v}.",
            "The {s} dates from {v}.",
            "Its charter was signed in {v}.",
        ],
        "seat": [
            "Its hall stands in {v}.",
            "The {s} has its seat in {v}.",
            "The guild meets in the city of {v}.",
        ],
        "members": [
            "It has {v} members.",
            "The guild counts {v} members.",
            "Some {v} craftspeople belong to the {s}.",
        ],
    },
}

FILLERS = [
    "Travellers often describe it as {adj} and welcoming, especially in the early spring.",
    "Many old songs and stories mention {s}, though few of them agree on the details.",
    "Its name is said to come from an old word for {noun}.",
    "Scholars still argue about parts of its early history and about the meaning of its oldest records.",
    "Visitors are rarely disappointed by what they find there, and many of them come back.",
    "Local people tell a story about a {adj} winter that lasted for many months.",
    "Painters and poets have long been drawn to it by its {adj} mood.",
]
NOUNS = ["morning", "stone", "harvest", "lantern", "crossing", "feather", "silence", "bread"]

# Gold questions: phrased differently from the offline teacher's, but asking for the same spans.
GOLD_QUESTIONS: dict[str, list[str]] = {
    "region": ["Where does the kingdom of {s} lie?"],
    "capital": ["Name the capital city of the kingdom of {s}.", "{s} is governed from which city?"],
    "founded_year": ["{s} came into being in which year?", "Give the founding year of {s}."],
    "ruler": ["Name the person who reigns over {s}.", "{s} has which monarch on its throne?"],
    "population": ["Give the number of inhabitants of {s}.", "{s} is home to how many people?"],
    "kingdom": ["{s} is part of which kingdom?", "Name the kingdom that the city of {s} is in."],
    "river": ["Name the river on which {s} was built.", "{s} sits beside which river?"],
    "known_for": ["Which goods bring merchants to {s}?", "Name the product that made {s} famous."],
    "mouth": ["The {s} empties into which body of water?", "Name the sea at the mouth of the {s}."],
    "length": ["Give the total length of the {s}.", "The {s} runs for how long?"],
    "source": ["Name the mountain where the {s} begins.", "The {s} springs from which mountain?"],
    "city": ["Name a city along the banks of the {s}.", "The {s} flows past which city?"],
    "range": ["{s} belongs to which mountain range?", "Name the range that includes {s}."],
    "height": ["Give the height of {s}.", "{s} rises how far above the sea?"],
    "first_climber": ["Name the first person to stand on top of {s}.", "{s} was first climbed by whom?"],
    "ascent_year": [
        "Give the year {s} was first climbed.",
        "The first ascent of {s} happened in which year?",
    ],
    "birthplace": ["Name the birthplace of the inventor {s}.", "{s} was born in which city?"],
    "invention": ["Name the device that {s} invented.", "{s} is famous for inventing what?"],
    "invention_year": ["Give the year the invention of {s} was first shown to the public."],
    "guild": ["Name the guild that counted {s} among its members.", "{s} was a member of which guild?"],
    "kind": ["What kind of vessel is {s}?"],
    "captain": ["Name the captain in command of {s}.", "{s} sails under which captain?"],
    "launch_year": ["Give the year the ship {s} was launched.", "{s} first went to sea in which year?"],
    "home_port": ["Name the port where {s} is based.", "{s} has which city as its home port?"],
    "cargo": ["Name the goods that {s} mostly carries.", "{s} is loaded with what cargo?"],
    "trade": ["Name the craft practised by the {s}.", "The {s} is devoted to which trade?"],
    "founder": ["Name the person who started the {s}.", "The {s} was founded by whom?"],
    "seat": ["Name the city where the {s} meets.", "The {s} has its hall in which city?"],
    "members": ["Give the number of members of the {s}.", "The {s} has how many members?"],
}

QUERIES = [
    "capital city of a kingdom",
    "year a kingdom was founded",
    "ruler of the kingdom throne",
    "population of the kingdom people live",
    "kingdom in the region marches steppe coast highlands",
    "city in the kingdom of",
    "city lies on the banks of a river",
    "year the city was founded",
    "population of the city",
    "city famous for its goods merchants travel",
    "river flows into the sea",
    "length of a river in kilometres runs for",
    "source of the river rises on mount",
    "city on the banks of the river passes",
    "mountain in a range highest peak",
    "height of the mountain in metres summit",
    "first climbed first ascent of the mountain",
    "year of the first ascent",
    "inventor born in a city",
    "what did the inventor invent remembered",
    "invention first demonstrated shown",
    "inventor member of a guild belonged",
    "ship commanded by captain",
    "year the ship was launched put to sea",
    "home port of the ship harbour",
    "cargo the ship carries trades",
    "merchant ship barge ketch courier",
    "guild devoted to a trade craft practises",
    "who founded the guild",
    "year the guild was founded charter",
    "guild hall seat meets in the city",
    "number of members of the guild craftspeople",
]

ENTITY_TYPES = list(TEMPLATES)


@dataclass
class Entity:
    """One fictional thing and its facts (fact name -> value as it appears in text)."""

    kind: str
    name: str
    facts: dict[str, str] = field(default_factory=dict)


class NameMaker:
    """Unique capitalised names built from syllables (a fresh name on every call)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def word(self) -> str:
        while True:
            n = self.rng.choice([2, 2, 3])
            w = "".join(self.rng.choice(SYLLABLES) for _ in range(n)).capitalize()
            if w not in self.used and 4 <= len(w) <= 10:
                self.used.add(w)
                return w

    def person(self) -> str:
        return f"{self.word()} {self.word()}"


def make_world(seed: int, per_type: int) -> list[Entity]:
    """Build `per_type` entities of every type, their facts referring to each other's names."""
    rng = random.Random(seed)
    names = NameMaker(rng)
    kingdoms = [names.word() for _ in range(per_type)]
    cities = [names.word() for _ in range(per_type)]
    rivers = [f"{names.word()} River" for _ in range(per_type)]
    mountains = [f"Mount {names.word()}" for _ in range(per_type)]
    ranges = [f"{names.word()} Range" for _ in range(max(3, per_type // 5))]
    seas = [f"{names.word()} Sea" for _ in range(max(3, per_type // 6))]
    guilds = [f"{names.word()} Guild" for _ in range(per_type)]
    inventors = [names.person() for _ in range(per_type)]
    ships = [names.word() for _ in range(per_type)]

    def year() -> str:
        return str(rng.randint(310, 1780))

    def count(lo: int, hi: int) -> str:
        return f"{rng.randint(lo, hi):,}"

    entities: list[Entity] = []
    for k in kingdoms:
        entities.append(
            Entity(
                "kingdom",
                k,
                {
                    "region": rng.choice(REGIONS),
                    "capital": rng.choice(cities),
                    "founded_year": year(),
                    "ruler": names.person(),
                    "population": count(200_000, 9_000_000),
                },
            )
        )
    for c in cities:
        entities.append(
            Entity(
                "city",
                c,
                {
                    "kingdom": rng.choice(kingdoms),
                    "river": rng.choice(rivers).removesuffix(" River"),
                    "founded_year": year(),
                    "population": count(2_000, 900_000),
                    "known_for": rng.choice(PRODUCTS),
                },
            )
        )
    for r in rivers:
        entities.append(
            Entity(
                "river",
                r,
                {
                    "mouth": rng.choice(seas),
                    "length": f"{count(40, 3200)} kilometres",
                    "source": rng.choice(mountains),
                    "city": rng.choice(cities),
                },
            )
        )
    for m in mountains:
        entities.append(
            Entity(
                "mountain",
                m,
                {
                    "range": rng.choice(ranges),
                    "height": f"{count(900, 8400)} metres",
                    "first_climber": names.person(),
                    "ascent_year": year(),
                },
            )
        )
    for p in inventors:
        entities.append(
            Entity(
                "inventor",
                p,
                {
                    "birthplace": rng.choice(cities),
                    "invention": rng.choice(INVENTIONS),
                    "invention_year": year(),
                    "guild": rng.choice(guilds),
                },
            )
        )
    for s in ships:
        entities.append(
            Entity(
                "ship",
                s,
                {
                    "kind": rng.choice(SHIP_KINDS),
                    "captain": names.person(),
                    "launch_year": year(),
                    "home_port": rng.choice(cities),
                    "cargo": rng.choice(CARGOES),
                },
            )
        )
    for g in guilds:
        entities.append(
            Entity(
                "guild",
                g,
                {
                    "trade": rng.choice(TRADES),
                    "founder": names.person(),
                    "founded_year": year(),
                    "seat": rng.choice(cities),
                    "members": count(20, 4000),
                },
            )
        )
    return entities


def render_passage(entity: Entity, rng: random.Random) -> tuple[str, dict[str, str]]:
    """Write one passage about `entity`; return its text and the sentence that states each fact."""
    templates = TEMPLATES[entity.kind]
    facts = list(entity.facts)
    first, rest = facts[0], facts[1:]
    rng.shuffle(rest)
    sentences: dict[str, str] = {}
    for fact in [first, *rest]:
        options = templates[fact]
        # The opening sentence must name the subject; later ones may use a pronoun.
        tpl = options[0] if fact == first else rng.choice(options)
        sentences[fact] = tpl.format(s=entity.name, v=entity.facts[fact], adj=rng.choice(ADJECTIVES))
    body = list(sentences.values())
    n_fillers = rng.choice([1, 2, 2, 3])
    for filler in rng.sample(FILLERS, n_fillers):
        body.insert(
            rng.randint(2, len(body)),
            filler.format(s=entity.name, adj=rng.choice(ADJECTIVES), noun=rng.choice(NOUNS)),
        )
    return " ".join(body), sentences


def gold_rows(entity: Entity, text: str, rng: random.Random, per_entity: int) -> list[dict[str, str]]:
    """Gold questions about a held-out entity; answers are verbatim spans of `text`."""
    rows = []
    facts = [f for f in entity.facts if f not in {"region", "kind"}]
    for fact in rng.sample(facts, min(per_entity, len(facts))):
        answer = entity.facts[fact]
        assert answer in text, (answer, text)
        question = rng.choice(GOLD_QUESTIONS[fact]).format(s=entity.name)
        rows.append({"context": text, "question": question, "answer": answer, "category": fact})
    return rows


def generate(
    out: Path,
    seed: int = 0,
    per_type: int = 49,
    held_out_per_type: int = 6,
    gold_per_entity: int = 4,
    max_gold: int = 150,
) -> dict[str, int]:
    """Write passages.jsonl, queries.txt and gold_test.jsonl into `out`; return the row counts."""
    rng = random.Random(seed + 1)
    entities = make_world(seed, per_type)
    held_out: set[str] = set()
    for kind in ENTITY_TYPES:
        of_kind = [e.name for e in entities if e.kind == kind]
        held_out.update(rng.sample(of_kind, held_out_per_type))

    passages, gold_all = [], []
    for i, entity in enumerate(entities):
        text, _ = render_passage(entity, rng)
        if entity.name in held_out:
            gold_all.extend(gold_rows(entity, text, rng, gold_per_entity))
        else:
            passages.append({"id": f"p{i:04d}", "title": entity.name, "text": text})
    # Keep a sample balanced over entity types, in a stable order.
    keep = sorted(rng.sample(range(len(gold_all)), min(max_gold, len(gold_all))))
    gold = [{"id": f"gold-{j:04d}", **gold_all[k]} for j, k in enumerate(keep)]

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "passages.jsonl", "w") as f:
        for row in passages:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(out / "gold_test.jsonl", "w") as f:
        for row in gold:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "queries.txt").write_text("\n".join(QUERIES) + "\n")
    return {"passages": len(passages), "gold": len(gold), "queries": len(QUERIES)}


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate the fictional demo world.")
    parser.add_argument("--out", default="data/demo_world", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = generate(Path(args.out), seed=args.seed)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
