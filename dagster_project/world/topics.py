"""Generate the SynthesizRR demo task: topic classification of texts about the fictional demo world.

`python -m dagster_project.world.topics --out examples/synthesizrr/data --seed 0` writes, deterministically:

- `labels.yaml`         the 5 labels, each with a one-line description and a few cue words;
- `corpus.jsonl`        {"id", "title", "text"}: unlabelled encyclopedia-style passages (retrieval corpus);
- `corpus_topics.jsonl` {"id", "topic"}: the topic each corpus passage was written about (for tests and
                        retrieval analysis only; never an input to synthesis);
- `seeds.jsonl`         {"id", "text", "label"}: a few short news dispatches per label (the seed set);
- `gold_test.jsonl`     {"id", "text", "label"}: the evaluation set, written in other styles (letters,
                        gossip, citizens' questions, diaries, notices) about other entities than the seeds;
- `gold_train.jsonl`    {"id", "text", "label"}: more texts in the gold styles, disjoint from the test set
                        (only to train a label-preservation classifier).

Entities come from the demo world generator (`dagster_project.world.generate.make_world`): every name is
built from syllables, so nothing here is a real-world fact.
"""

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from dagster_project.world.generate import INVENTIONS, PRODUCTS, Entity, NameMaker, make_world

LABELS: dict[str, dict[str, object]] = {
    "politics": {
        "description": "Kingdoms and how they are governed: rulers, courts, councils, laws, taxes, treaties "
        "and wars between kingdoms.",
        "cues": [
            "kingdom",
            "ruler",
            "throne",
            "treaty",
            "council",
            "envoy",
            "decree",
            "tax",
            "border",
            "crown",
        ],
    },
    "trade": {
        "description": "Buying, selling and making goods: guilds, markets, merchants, prices, tolls and "
        "caravans.",
        "cues": [
            "guild",
            "market",
            "merchant",
            "price",
            "goods",
            "toll",
            "caravan",
            "sold",
            "silver",
            "workshop",
        ],
    },
    "science": {
        "description": "Inventors and their inventions, experiments, measurements, academies and "
        "discoveries.",
        "cues": ["inventor", "invention", "experiment", "academy", "device", "measured", "discovery", "lens"],
    },
    "seafaring": {
        "description": "Ships and life at sea: voyages, captains, crews, harbours, cargoes and navigation.",
        "cues": ["ship", "captain", "voyage", "harbour", "cargo", "crew", "sail", "port", "anchor", "deck"],
    },
    "nature": {
        "description": "The land and its weather: rivers, mountains, forests, animals, floods, droughts "
        "and seasons.",
        "cues": [
            "river",
            "mountain",
            "flood",
            "rain",
            "snow",
            "forest",
            "birds",
            "weather",
            "valley",
            "peak",
        ],
    },
}
LABEL_NAMES = list(LABELS)

# Which entity kind a label's texts are written about (nature also uses mountains).
SUBJECT_KIND = {
    "politics": "kingdom",
    "trade": "guild",
    "science": "inventor",
    "seafaring": "ship",
    "nature": "river",
}

MONTHS = [
    "Frostmonth",
    "Thawmonth",
    "Seedmonth",
    "Bloommonth",
    "Highsun",
    "Harvestmonth",
    "Leaffall",
    "Darkmonth",
]
WEEKDAYS = ["first day", "market day", "rest day", "moon day", "fire day"]
LAWS = [
    "salt tax",
    "law on border tolls",
    "decree on land rights",
    "ban on private armies",
    "census of every household",
    "tax on windows",
    "law of inheritance",
    "decree on road repairs",
]
OFFICES = ["chancellor", "high steward", "regent", "first minister", "lord treasurer", "keeper of the seal"]
FIELDS = ["optics", "mechanics", "the study of the stars", "hydraulics", "the chemistry of dyes", "acoustics"]
MATERIALS = ["brass", "copper wire", "cut glass", "oak and iron", "whalebone", "tin plate"]
WEATHER = [
    "heavy autumn rains",
    "a late frost",
    "a long summer drought",
    "early snow",
    "a week of thick fog",
    "a violent hailstorm",
]
ANIMALS = ["grey herons", "wild goats", "silver trout", "red deer", "cranes", "mountain hares", "otters"]
TREES = ["pine", "birch", "black alder", "willow", "mountain ash", "juniper"]
SEAS_FALLBACK = ["Ulmor Sea"]
PLACES = ["bakery", "well", "washing stones", "inn", "barber's chair", "bridge", "town gate"]


@dataclass
class World:
    """The entities the topic texts are written about, by kind, plus extra names."""

    kingdoms: list[Entity]
    cities: list[Entity]
    rivers: list[Entity]
    mountains: list[Entity]
    inventors: list[Entity]
    ships: list[Entity]
    guilds: list[Entity]
    seas: list[str]
    people: list[str]

    def of_kind(self, kind: str) -> list[Entity]:
        return {
            "kingdom": self.kingdoms,
            "river": self.rivers,
            "mountain": self.mountains,
            "inventor": self.inventors,
            "ship": self.ships,
            "guild": self.guilds,
        }[kind]


def build_world(seed: int, per_type: int = 49, n_people: int = 160) -> World:
    """The demo world's entities (the same `make_world` the grounded-QA demo uses) and extra person names."""
    entities = make_world(seed, per_type)
    by_kind: dict[str, list[Entity]] = {}
    for e in entities:
        by_kind.setdefault(e.kind, []).append(e)
    names = NameMaker(random.Random(seed + 7))
    for e in entities:  # new people never reuse a world name as a word
        names.used.update(e.name.split())
    people = [names.person() for _ in range(n_people)]
    seas = sorted({e.facts["mouth"] for e in by_kind["river"]}) or SEAS_FALLBACK
    return World(
        kingdoms=by_kind["kingdom"],
        cities=by_kind["city"],
        rivers=by_kind["river"],
        mountains=by_kind["mountain"],
        inventors=by_kind["inventor"],
        ships=by_kind["ship"],
        guilds=by_kind["guild"],
        seas=seas,
        people=people,
    )


# ---------------------------------------------------------------------------------------------------
# Slot values for one text: the subject entity's facts plus random extras, all consistent for one text


def _other(rng: random.Random, items: list[Entity], not_this: Entity) -> Entity:
    choices = [e for e in items if e.name != not_this.name]
    return rng.choice(choices)


def slots(label: str, subject: Entity, world: World, rng: random.Random) -> dict[str, str]:
    """Every placeholder a template of `label` may use, filled for one text about `subject`."""
    city = rng.choice(world.cities)
    city2 = _other(rng, world.cities, city)
    s: dict[str, str] = {
        "city": city.name,
        "city2": city2.name,
        "year": str(rng.randint(1100, 1790)),
        "month": rng.choice(MONTHS),
        "day": str(rng.randint(1, 28)),
        "weekday": rng.choice(WEEKDAYS),
        "person": rng.choice(world.people),
        "person2": rng.choice(world.people),
        "num": str(rng.randint(3, 90)),
        "place": rng.choice(PLACES),
        "big": f"{rng.randint(2, 60) * 100:,}",
    }
    if label == "politics":
        k2 = _other(rng, world.kingdoms, subject)
        s |= {
            "kingdom": subject.name,
            "ruler": subject.facts["ruler"],
            "capital": subject.facts["capital"],
            "region": subject.facts["region"],
            "founded": subject.facts["founded_year"],
            "population": subject.facts["population"],
            "kingdom2": k2.name,
            "ruler2": k2.facts["ruler"],
            "treaty": f"Treaty of {city.name}",
            "law": rng.choice(LAWS),
            "office": rng.choice(OFFICES),
        }
    elif label == "trade":
        p1, p2 = rng.sample(PRODUCTS, 2)
        s |= {
            "guild": subject.name,
            "craft": subject.facts["trade"],
            "seat": subject.facts["seat"],
            "founder": subject.facts["founder"],
            "members": subject.facts["members"],
            "product": p1,
            "product2": p2,
            "price": f"{rng.randint(2, 40)} silver pieces",
            "guild2": _other(rng, world.guilds, subject).name,
        }
    elif label == "science":
        colleague = _other(rng, world.inventors, subject)
        s |= {
            "inventor": subject.name,
            "invention": subject.facts["invention"],
            "birthplace": subject.facts["birthplace"],
            "inv_year": subject.facts["invention_year"],
            "academy": f"Academy of {subject.facts['birthplace']}",
            "field": rng.choice(FIELDS),
            "material": rng.choice(MATERIALS),
            "colleague": colleague.name,
            "invention2": rng.choice([i for i in INVENTIONS if i != subject.facts["invention"]]),
        }
    elif label == "seafaring":
        s |= {
            "ship": subject.name,
            "kind": subject.facts["kind"],
            "captain": subject.facts["captain"],
            "port": subject.facts["home_port"],
            "cargo": subject.facts["cargo"],
            "launched": subject.facts["launch_year"],
            "sea": rng.choice(world.seas),
            "port2": city2.name,
            "ship2": _other(rng, world.ships, subject).name,
            "days": str(rng.randint(4, 60)),
            "crew": str(rng.randint(9, 140)),
        }
    elif label == "nature":
        if subject.kind == "river":
            river = subject
            mountain = next((m for m in world.mountains if m.name == river.facts["source"]), None)
            mountain = mountain or rng.choice(world.mountains)
        else:
            mountain = subject
            feeding = [r for r in world.rivers if r.facts["source"] == mountain.name]
            river = rng.choice(feeding or world.rivers)
        s |= {
            "river": river.name,
            "mouth": river.facts["mouth"],
            "length": river.facts["length"],
            "rcity": river.facts["city"],
            "mountain": mountain.name,
            "range": mountain.facts["range"],
            "height": mountain.facts["height"],
            "climber": mountain.facts["first_climber"],
            "weather": rng.choice(WEATHER),
            "animal": rng.choice(ANIMALS),
            "tree": rng.choice(TREES),
        }
    return s


# ---------------------------------------------------------------------------------------------------
# Corpus: encyclopedia-style passages. Per passage type: a title template, an opening sentence (names the
# subject), and sentences picked from a pool until the passage is long enough.


@dataclass(frozen=True)
class PassageType:
    label: str
    subject_kind: str
    title: str
    opening: str
    pool: tuple[str, ...]


PASSAGE_TYPES: list[PassageType] = [
    PassageType(
        "politics",
        "kingdom",
        "{kingdom}",
        "{kingdom} is a kingdom of the {region}, governed from its capital {capital}.",
        (
            "Its present ruler, {ruler}, came to the throne after a disputed succession.",
            "The crown shares power with a council of nobles that meets in {capital} twice a year.",
            "Chroniclers date the founding of the kingdom to {founded}, when several lordships swore "
            "allegiance to a single ruler.",
            "For generations the kingdom quarrelled with {kingdom2} over the border forts of the {region}.",
            "A {law} introduced under {ruler} remains the most debated law of the reign.",
            "The office of {office} is held by a noble chosen by the ruler and confirmed by the council.",
            "Envoys of {kingdom2} keep a permanent residence at the royal court.",
            "About {population} subjects owe allegiance to the crown.",
            "The kingdom is divided into provinces, each governed by a royal governor answerable to the "
            "throne.",
            "Its law code was written down in {year} and has been amended by royal decree ever since.",
        ),
    ),
    PassageType(
        "politics",
        "kingdom",
        "{treaty}",
        "The {treaty} is an agreement between the kingdoms of {kingdom} and {kingdom2}, signed in {year}.",
        (
            "It ended a border war that had lasted for {num} months.",
            "The treaty was negotiated by envoys of {ruler} and {ruler2} over a long winter of talks.",
            "Under its terms both crowns gave up their claims to the disputed forts of the {region}.",
            "Each kingdom promised to send hostages of noble birth to the other's court as a pledge of "
            "peace.",
            "The treaty also fixed the tribute {kingdom2} owed to the throne of {kingdom}.",
            "Later rulers renewed it several times, and it is still read aloud when a new ruler is crowned.",
            "Historians count it among the most important treaties of the age.",
            "A copy sealed by both rulers is kept in the council chamber of {capital}.",
        ),
    ),
    PassageType(
        "trade",
        "guild",
        "{guild}",
        "The {guild} is a guild of craftspeople devoted to {craft}, with its hall in {seat}.",
        (
            "It was founded by {founder} and counts {members} members today.",
            "Only masters of the guild may sell finished work in the market of {seat}.",
            "Its workshops are best known for {product}, which merchants carry to many distant markets.",
            "The guild sets the prices its members charge and fines anyone who sells below them.",
            "Apprentices serve seven years before they may open a workshop of their own.",
            "A long rivalry with the {guild2} over market stalls was settled by a shared charter in {year}.",
            "Guild dues are paid in silver each quarter and fund the hall and the care of old members.",
            "Caravans from {city2} bring it the raw materials its workshops need.",
            "Its stamp on a piece of {product} is said to double the price buyers will pay.",
        ),
    ),
    PassageType(
        "trade",
        "guild",
        "{seat} Market",
        "The market of {seat} is one of the busiest trading places of the region, where the {guild} "
        "keeps its stalls.",
        (
            "Merchants sell {product} and {product2} there from dawn until the evening bell.",
            "A toll of {num} copper coins is charged on every cart that enters the market square.",
            "Prices are posted each morning on a board outside the weighing house.",
            "In a good year a bale of {product2} fetches around {price} there.",
            "Caravans from {city2} arrive at the start of each month with fresh goods.",
            "Disputes between buyers and sellers are judged by market wardens chosen by the guilds.",
            "The great autumn fair draws traders and buyers from far beyond the region.",
            "Money changers set up their tables at the market gate to exchange foreign coin for silver.",
        ),
    ),
    PassageType(
        "science",
        "inventor",
        "{inventor}",
        "{inventor} was an inventor born in {birthplace}, best remembered for the {invention}.",
        (
            "The invention was first demonstrated in {inv_year} before a crowd of doubtful scholars.",
            "As a young student {inventor} studied {field} at the {academy}.",
            "The first working model was built of {material} and took several years to perfect.",
            "Careful experiments showed that the device worked far better than older designs.",
            "Letters to the inventor {colleague} record long arguments about measurements and method.",
            "Notebooks filled with drawings, calculations and failed trials survive in the academy library.",
            "Later scholars improved the design, but the principle of the {invention} remained unchanged.",
            "The inventor also worked on an early {invention2}, which was never finished.",
            "Late in life {inventor} gave lectures on {field} to crowded halls.",
        ),
    ),
    PassageType(
        "science",
        "inventor",
        "{academy}",
        "The {academy} is a school of learning where scholars teach {field} and test new inventions.",
        (
            "Among its most famous students was the inventor {inventor}, who later built the {invention}.",
            "Its workshop holds early models of the {invention} and the {invention2}.",
            "The academy keeps an observatory on its roof for measuring the positions of the stars.",
            "Every spring its members present their experiments to the public in the great hall.",
            "A prize for the most useful discovery of the year has been awarded there since {year}.",
            "The library holds thousands of notebooks recording measurements and calculations.",
            "Students grind their own lenses and build their own instruments as part of their training.",
            "The scholar {colleague} once taught there and wrote a treatise on {field}.",
        ),
    ),
    PassageType(
        "seafaring",
        "ship",
        "{ship}",
        "{ship} is a {kind} whose home port is {port}.",
        (
            "She was launched in {launched} and has made more voyages than any other ship of her harbour.",
            "Her captain is {captain}, who commands a crew of {crew}.",
            "She usually carries {cargo} across the {sea}.",
            "A crossing from {port} to {port2} takes her about {days} days with a fair wind.",
            "Her hull was rebuilt after she lost her mainmast in a storm at sea.",
            "Sailors say she is the fastest ship ever to leave the harbour of {port}.",
            "Her figurehead is a carved sea bird painted white and gold.",
            "In port she is moored at the long pier, where her cargo is unloaded by the harbour crews.",
            "Her logbooks record every voyage, the wind and the depth of every anchorage.",
        ),
    ),
    PassageType(
        "seafaring",
        "ship",
        "Port of {port}",
        "The port of {port} is a harbour on the {sea}, home to the {kind} {ship} and many other vessels.",
        (
            "Ships leave it for {port2} and other ports along the coast every week.",
            "A lighthouse at the harbour mouth guides ships past the rocks at night.",
            "The harbour master collects anchorage fees and assigns each ship a berth.",
            "Its shipyards build and repair hulls, masts and rigging for captains from many lands.",
            "Dock workers unload cargoes of {cargo} onto the long stone quays.",
            "Sailors wait in the harbour taverns for a berth on the next voyage.",
            "The harbour is sheltered by a stone breakwater that took {num} years to build.",
            "Pilots row out to meet incoming ships and steer them through the narrow channel.",
        ),
    ),
    PassageType(
        "nature",
        "river",
        "{river}",
        "The {river} is a river that rises on {mountain} and flows into the {mouth}.",
        (
            "It runs for {length} through forests of {tree} and wide green valleys.",
            "Every spring melting snow from the mountains swells it, and floods are common.",
            "{animal} live along its banks, and the river is rich in fish.",
            "The river passes the city of {rcity} before it reaches the lowlands.",
            "In dry summers the river shrinks and sandbanks appear in its bed.",
            "Its waters are cold and clear in the upper valley but brown with mud near the sea.",
            "Marshes at its mouth shelter great flocks of birds in winter.",
            "The great flood of {year} changed its course across the plain.",
            "After {weather} the river often rises by several metres within a day.",
        ),
    ),
    PassageType(
        "nature",
        "mountain",
        "{mountain}",
        "{mountain} is a mountain of the {range}, {height} high.",
        (
            "It was first climbed by {climber}.",
            "Its upper slopes are covered in snow for most of the year.",
            "The {river} rises in a spring on its northern side.",
            "Forests of {tree} cover its lower slopes, giving way to meadows and bare rock above.",
            "{animal} are often seen near the summit in summer.",
            "Sudden storms and thick fog make the weather on the mountain hard to predict.",
            "Avalanches close the high passes in winter.",
            "A glacier fills the valley below its eastern face.",
            "In the year {year} the mountain was shaken by a great rockfall.",
        ),
    ),
]


def _words(text: str) -> int:
    return len(text.split())


def render_passage(ptype: PassageType, s: dict[str, str], rng: random.Random) -> tuple[str, str]:
    """(title, text) of one passage: the opening, then pool sentences until 50-100 words (max 120)."""
    target = rng.randint(50, 100)
    rest = list(ptype.pool)
    rng.shuffle(rest)
    sentences = [ptype.opening.format_map(s)]
    for tpl in rest:
        if _words(" ".join(sentences)) >= target:
            break
        sentence = tpl.format_map(s)
        if _words(" ".join([*sentences, sentence])) > 120:
            break
        sentences.append(sentence[0].upper() + sentence[1:])
    return ptype.title.format_map(s), " ".join(sentences)


# ---------------------------------------------------------------------------------------------------
# Seeds: short news dispatches (one template per seed, so the 8 seeds of a label all differ)

SEED_TEMPLATES: dict[str, list[str]] = {
    "politics": [
        "{capital}, {month} {day}: {ruler} of {kingdom} signed the {treaty} with envoys of {kingdom2}, "
        "ending the quarrel over the border forts, court officials said.",
        "The royal council of {kingdom} voted on {weekday} to approve the {law} proposed by {ruler}.",
        "{ruler} dismissed the {office} of {kingdom} after a stormy session of the council in {capital}.",
        "Envoys of {kingdom2} arrived in {capital} to demand tribute from the throne of {kingdom}, heralds "
        "reported.",
        "{kingdom} closed its border with {kingdom2} after the murder of a royal envoy, the crown announced.",
        "The nobles of {kingdom} swore a new oath of allegiance to {ruler} at a ceremony in {capital}.",
        "A royal decree issued in {capital} orders every province of {kingdom} to count its households.",
        "{ruler} and {ruler2} met at the border on {weekday} to discuss a marriage alliance between "
        "their kingdoms.",
    ],
    "trade": [
        "{seat}, {month} {day}: the {guild} raised the price of its {product} by a third, citing dearer "
        "raw materials.",
        "Merchants at the market of {seat} reported brisk sales of {product} on {weekday}.",
        "The {guild} won the right to hold a second stall in the market of {seat} after a long dispute "
        "with the {guild2}.",
        "A caravan from {city2} reached {seat} with forty carts of {product2} for the autumn fair.",
        "Toll collectors at {seat} doubled the charge on carts of {product}, angering local merchants.",
        "The {guild} admitted {num} new masters this season, its largest intake of the decade.",
        "Prices of {product2} fell to {price} a bale in {seat} as new workshops flooded the market.",
        "The {guild} will open a new workshop in {city2} to meet demand for {product}, its masters said.",
    ],
    "science": [
        "{birthplace}, {month} {day}: the inventor {inventor} demonstrated an improved {invention} before "
        "scholars of the {academy}.",
        "The {academy} awarded its prize for discovery to {inventor} for work on the {invention}.",
        "{inventor} measured the speed of falling weights in a public experiment in {birthplace} on "
        "{weekday}.",
        "Scholars in {birthplace} confirmed that the {invention} built by {inventor} works as claimed.",
        "{inventor} announced a new design for the {invention} built of {material}, promising a public test "
        "at the {academy}.",
        "A fire destroyed the workshop of the inventor {inventor}, along with years of notebooks.",
        "The {academy} opened a new hall for experiments in {field}, funded by {inventor}.",
        "{inventor} and {colleague} will jointly test a device for measuring distance, the academy said.",
    ],
    "seafaring": [
        "{port}, {month} {day}: the {kind} {ship} returned to harbour after a voyage of {days} days "
        "across the {sea}.",
        "Captain {captain} of {ship} reported heavy seas off {port2} but no loss of cargo.",
        "{ship} sailed from {port} on {weekday} with a full cargo of {cargo} bound for {port2}.",
        "The crew of {ship} rescued sailors from a sinking ship on the {sea}, the harbour master said.",
        "{ship} dropped anchor at {port2} after losing her mainmast in a squall, Captain {captain} told the "
        "harbour master.",
        "Captain {captain} will take {ship} on her longest voyage yet, to the far side of the {sea}.",
        "Harbour crews at {port} unloaded {cargo} from {ship} through the night; she sails again at dawn "
        "for {port2}.",
        "The {kind} {ship} was refitted in the shipyards of {port} and will sail again next month.",
    ],
    "nature": [
        "{rcity}, {month} {day}: the {river} burst its banks after {weather}, flooding fields along the "
        "valley.",
        "Snow closed the passes around {mountain} on {weekday}, shepherds in the {range} reported.",
        "The {river} fell to its lowest level in memory after {weather}, stranding boats near {rcity}.",
        "Herders said {animal} have returned to the slopes of {mountain} for the first time in years.",
        "A rockfall on {mountain} blocked the valley where the {river} begins, shepherds from the {range} "
        "reported on {weekday}.",
        "Forests of {tree} along the {river} turned early this year after a cold autumn.",
        "Fog lay over the {range} for {num} days, and the peak of {mountain} was hidden from the valley.",
        "Fishermen on the {river} reported large shoals of silver trout after the spring rains.",
    ],
}

# ---------------------------------------------------------------------------------------------------
# Gold: letters, gossip, citizens' questions, diaries, notices. Written unlike the seeds and the corpus.

GOLD_TEMPLATES: dict[str, list[str]] = {
    "politics": [
        "Dear sister, the whole of {capital} talks of nothing but the new {law}. I fear the council will "
        "quarrel over it until winter.",
        "Heard by the well: the envoy from {kingdom2} stormed out of the palace, and folk say the peace is "
        "dead.",
        "Can anyone tell me whether {ruler} still means to summon the council this year, or has it been "
        "put off again?",
        "My diary, {month} {day}. Heralds read a decree in the square today: every village of {kingdom} "
        "must send two elders to the assembly.",
        "Is it true that {kingdom} and {kingdom2} will sign a peace at last? My son guards a border fort "
        "and I want him home.",
        "To my friend in {city}: the {office} has fallen from favour and everyone at court is choosing "
        "sides. Burn this letter.",
        "They say in the tavern that {ruler2} wants the crown of {kingdom} for a nephew. War talk again, "
        "I'm afraid.",
        "NOTICE to the citizens of {kingdom}: magistrates will be elected on {month} {day}; every "
        "householder "
        "may cast one vote.",
        "Why must we pay yet another tax to the crown when the last one bought nothing but a grander palace "
        "for {ruler}?",
        "Grandmother swears she saw {ruler} as a child, long before the throne. Now the whole realm bows.",
        "Who will rule {kingdom} if {ruler} dies without an heir? The nobles are already counting votes.",
        "Dear uncle, I have been appointed clerk to the royal council, so I shall write down every law "
        "they argue over.",
        "Word at the gate is that the border with {kingdom2} will close by the next moon. Who gave that "
        "order?",
        "I signed the petition against the {law} today. Forty names from our street alone!",
    ],
    "trade": [
        "Dear cousin, I sold all my {product} at the fair and came home with a purse full of silver.",
        "Heard at the stalls: the {guild} will charge more for {product} next month, so buy now while you "
        "can.",
        "Does anyone know what a bale of {product2} costs in {seat} these days? I was asked {price}.",
        "My diary, {month} {day}. Paid the toll at the market gate and haggled an hour over a crate of "
        "{product2}.",
        "Is it worth joining the {guild}? The dues are steep, but they say masters never lack buyers.",
        "To my partner in {city2}: send forty more crates of {product}. The merchants here cannot get "
        "enough.",
        "Gossip from the weighing house: someone has been selling fake {product} with a forged guild stamp.",
        "NOTICE: the workshop of master {person} seeks two apprentices. Board and wages paid in silver.",
        "Why does the price of {product2} double every time the caravans are late? Somebody profits from it.",
        "Old {person} swears the best bargains are made before the market bell, when the sellers are sleepy.",
        "Who sets the prices at the {seat} market anyway, the guilds or the buyers?",
        "Dear mother, I have opened my own stall at last. Business is slow, but the goods are good.",
        "The money changer at the gate cheated me again, I'm sure of it. Three coins short!",
        "I hear the {guild} wants a monopoly on {craft}. The small workshops will never survive that.",
    ],
    "science": [
        "Dear teacher, I repeated your experiment with the lenses and measured the same result three times.",
        "They say at the academy that {inventor} has built a {invention} that works without anyone turning "
        "it.",
        "Can someone explain how the {invention} actually works? My brother claims it is a trick.",
        "My notebook, {month} {day}. Tried a new gear for the {invention2}; it jammed twice. Will measure "
        "again tomorrow.",
        "Is it true that {inventor} will lecture on {field} next week? I want a seat near the front.",
        "To my colleague in {city}: your calculations were right, and the device now keeps time to the "
        "minute.",
        "Heard in the lecture hall: {inventor} and {colleague} are quarrelling over who made the discovery "
        "first.",
        "NOTICE: the academy invites the public to watch experiments with {material} on {weekday}.",
        "Why do the scholars keep measuring the same stars every night? Surely they know where they are by "
        "now.",
        "Little {person} took apart the family clock to see how it works. An inventor in the making!",
        "Who first had the idea for the {invention}? Every book I read gives a different inventor.",
        "Dear father, I passed the entrance examination and will study {field} at the academy this autumn.",
        "The new device of {inventor} exploded in the workshop yesterday, but nobody was hurt.",
        "I built a small model of the {invention} from {material}, and it almost works.",
    ],
    "seafaring": [
        "Dear wife, we made port in {port2} after {days} days at sea. The crew is tired but the cargo is "
        "dry.",
        "Heard on the quay: {ship} lost two sailors overboard in the last storm, and the captain blames the "
        "pilot.",
        "Does anyone know when {ship} sails again? I need passage across the {sea} before winter.",
        "Ship's journal, {month} {day}. Wind from the north, heavy swell. Reefed the mainsail and held our "
        "course.",
        "Is it true that Captain {captain} never loses a cargo? My whole fortune is in her hold.",
        "To the harbour master of {port}: please keep a berth for us, we arrive on the next tide.",
        "Gossip in the dockside tavern: the {kind} {ship} will be sold, and her crew paid off.",
        "NOTICE: able seamen wanted for a long voyage. Apply to Captain {captain} at the harbour office.",
        "Why do sailors refuse to set sail on the first day of the month? My grandfather never would.",
        "My brother signed on as ship's boy today. He has never been further than the end of the pier.",
        "Who steers a ship at night when the stars are hidden? I have always wondered.",
        "Dear mother, I was seasick for a week, but now I climb the rigging like the others.",
        "The lighthouse keeper says three ships anchored in the bay last night waiting for the fog to lift.",
        "We unloaded {cargo} until dawn. My hands are raw from the ropes.",
    ],
    "nature": [
        "Dear brother, the {river} rose so high this spring that the lower fields are still under water.",
        "Heard at the mill: {animal} have been seen on the slopes above the village for the first time in "
        "years.",
        "Does anyone know if the pass below {mountain} is open yet? The snow was deep last week.",
        "My diary, {month} {day}. Hard frost again, and the {tree} trees by the river are white with rime.",
        "Is it true that the {river} once flowed on the other side of the valley? Grandfather says so.",
        "To my friend in {city}: come in autumn, when the forest turns red and the cranes fly south.",
        "The shepherds say the glacier on {mountain} has shrunk a whole field's length since their youth.",
        "WARNING: after {weather}, stay away from the riverbanks; the water can rise overnight.",
        "Why does the fog always sit on the {range} in the mornings and lift by noon?",
        "Old {person} says you can tell the weather by how low the swallows fly. So far she is right.",
        "Who knows the name of the little blue flower that grows beside the streams in spring?",
        "Dear mother, we climbed halfway up {mountain} and saw the whole valley below, green and silver.",
        "The drought has lasted all summer; the stream behind our house is a line of dry stones.",
        "A storm blew down three old {tree} trees on the hill last night. The wind howled like wolves.",
    ],
}


# Gold texts are also composed: a label-neutral frame (letter, gossip, diary, question) around a
# label's plain statement, so the gold sets vary more than their templates alone would.
GOLD_FRAMES = [
    "Dear {person}, news from home. {body} Write back soon.",
    "Overheard at the {place}: {body}",
    "{month} {day}. {body} Nothing else worth writing down today.",
    "{body} Is that true, or just talk? Someone please tell me.",
    "Friends, listen. {body} Tell everyone you know.",
    "A letter from {person2}: {body}",
]

GOLD_BODIES: dict[str, list[str]] = {
    "politics": [
        "{ruler} has put a new tax on salt and bread, and the council did not dare object.",
        "The envoys from {kingdom2} are back at court, and nobody knows if they bring peace or war.",
        "The {office} was arrested last night on the ruler's orders.",
        "Our village must send three young men to guard the border of {kingdom}.",
        "The throne of {kingdom} will pass to the ruler's niece, not the son.",
        "The assembly in {capital} has voted to limit the power of the crown.",
        "They are redrawing the border between {kingdom} and {kingdom2}, and our farm may end up on the "
        "other side.",
        "The royal judges have struck down the {law}.",
        "Two nobles were banished from {kingdom} for plotting against {ruler}.",
        "The treaty with {kingdom2} will be signed at midsummer, if the council agrees.",
    ],
    "trade": [
        "The {guild} has fixed the price of {product} at {price} for the whole season.",
        "A merchant from {city2} bought every bale of {product2} in the market before noon.",
        "The toll on the market bridge went up again, and the carters are furious.",
        "The caravan from {city2} is late, so there is no {product} to be had anywhere.",
        "Our workshop sold twice as much {product} this month as last.",
        "The {guild} threw out a master for selling below the fixed price.",
        "A new shop on our street sells {product2} cheaper than the guild stalls.",
        "Buyers at the {seat} fair paid in foreign coin, and the money changers grew rich.",
        "The guild masters want a monopoly on {craft} in {seat}.",
        "Traders are hoarding {product2} in their cellars, hoping prices will climb.",
    ],
    "science": [
        "{inventor} has shown the {invention} to the academy, and the scholars were speechless.",
        "The experiment at the academy failed again; the {material} cracked under the heat.",
        "A student measured the height of the tower using only a lens and a shadow.",
        "{inventor} claims a new device can measure the distance to the moon.",
        "The academy is buying glass for a great new lens to look at the stars.",
        "{colleague} says the {invention} was really their own discovery.",
        "They tested a {invention2} in the courtyard, and it worked on the first try.",
        "The scholars of {field} have published a book of all their measurements.",
        "An inventor in {city} built a machine that sorts seeds by weight.",
        "{inventor} is looking for assistants to help with experiments in {field}.",
    ],
    "seafaring": [
        "{ship} came into harbour with a torn sail and half her crew sick.",
        "Captain {captain} is hiring sailors for a voyage across the {sea}.",
        "The cargo of {cargo} on {ship} was lost when a wave swept the deck.",
        "A new {kind} was launched at {port} today, with flags on every mast.",
        "Pirates have been seen off the coast near {port2}, and no ship leaves without an escort.",
        "The harbour is so full that ships are anchored three deep outside the breakwater.",
        "My nephew sailed as cabin boy on {ship} and saw whales in the {sea}.",
        "{ship} ran aground on the sandbar and waited two days for the tide.",
        "The crew of {ship} refused to sail until they were paid.",
        "The pilot guided six ships through the channel in one night.",
    ],
    "nature": [
        "The {river} has frozen from bank to bank for the first time in twenty winters.",
        "The {animal} came down from {mountain} because of the deep snow.",
        "The spring floods on the {river} carried away the old wooden bridge.",
        "After {weather}, the wheat in the valley is ruined.",
        "The {tree} forest on the hill is full of mushrooms after the rain.",
        "Lightning struck the summit of {mountain} three times in one night.",
        "The {river} is so low that children can wade across it.",
        "Thick fog has covered the {range} for a week.",
        "The first swallows are back, and the snow is melting on {mountain}.",
        "A landslide has blocked the stream that feeds our valley.",
    ],
}


def gold_templates(label: str) -> list[str]:
    """Every gold template of `label`: the whole ones, then each frame around each statement."""
    composed = [f.replace("{body}", b) for f in GOLD_FRAMES for b in GOLD_BODIES[label]]
    return GOLD_TEMPLATES[label] + composed


# ---------------------------------------------------------------------------------------------------
# Assembling the files


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _texts(
    label: str,
    templates: list[str],
    subjects: list[Entity],
    world: World,
    rng: random.Random,
    n: int,
    taken: set[str],
    order: list[str],
) -> list[str]:
    """`n` distinct texts of `label` (none already in `taken`): text i from template `order[i]`, retried
    with a random template of `templates` when it comes out equal to a text already taken."""
    out: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n:
            raise RuntimeError(f"could not write {n} distinct {label} texts")
        tpl = order[len(out)] if attempts <= n else rng.choice(templates)
        text = tpl.format_map(slots(label, rng.choice(subjects), world, rng))
        text = text[0].upper() + text[1:]
        if text not in taken:
            taken.add(text)
            out.append(text)
    return out


def generate(
    out: Path,
    seed: int = 0,
    seeds_per_label: int = 8,
    test_per_label: int = 40,
    train_per_label: int = 30,
    extra_passages_per_label: int = 21,
) -> dict[str, int]:
    """Write the task's files into `out`; return the row counts."""
    rng = random.Random(seed + 101)
    world = build_world(seed)

    # Seed subjects are held out of the gold sets' subjects (gold is about other entities).
    seed_subjects: dict[str, list[Entity]] = {}
    gold_subjects: dict[str, list[Entity]] = {}
    for label in LABEL_NAMES:
        pool = list(world.of_kind(SUBJECT_KIND[label]))
        rng.shuffle(pool)
        seed_subjects[label] = pool[:seeds_per_label]
        gold_subjects[label] = pool[seeds_per_label:]
    gold_subjects["nature"] += world.mountains

    # Corpus: one passage per subject entity of the first passage type of each label (seed subjects
    # included, so seeds retrieve their own entities), plus `extra_passages_per_label` of the second type.
    corpus, topics = [], []
    for label in LABEL_NAMES:
        main_type, extra_type = [p for p in PASSAGE_TYPES if p.label == label]
        rows = [(main_type, e) for e in world.of_kind(main_type.subject_kind)]
        extra_pool = world.of_kind(extra_type.subject_kind)
        n_extra = min(extra_passages_per_label, len(extra_pool))
        rows += [(extra_type, e) for e in rng.sample(extra_pool, n_extra)]
        for ptype, entity in rows:
            title, text = render_passage(ptype, slots(label, entity, world, rng), rng)
            corpus.append({"title": title, "text": text, "topic": label})
    rng.shuffle(corpus)
    corpus_rows = [{"id": f"c{i:04d}", "title": r["title"], "text": r["text"]} for i, r in enumerate(corpus)]
    topics = [{"id": f"c{i:04d}", "topic": r["topic"]} for i, r in enumerate(corpus)]

    taken = {r["text"] for r in corpus_rows}
    seeds: list[dict[str, object]] = []
    for label in LABEL_NAMES:
        templates = SEED_TEMPLATES[label]
        order = rng.sample(templates, len(templates))
        for i, subject in enumerate(seed_subjects[label]):
            text = order[i % len(order)].format_map(slots(label, subject, world, rng))
            taken.add(text)
            seeds.append({"text": text, "label": label})
    rng.shuffle(seeds)
    seed_rows = [{"id": f"seed-{i:03d}", **s} for i, s in enumerate(seeds)]

    test, train = [], []
    for label in LABEL_NAMES:
        whole, templates = GOLD_TEMPLATES[label], gold_templates(label)
        n = test_per_label + train_per_label
        # About half the texts from the whole templates (each used about equally), half composed.
        order = [t for _ in range(n // (2 * len(whole)) + 1) for t in rng.sample(whole, len(whole))]
        order = order[: n // 2] + rng.sample(templates[len(whole) :], n - n // 2)
        rng.shuffle(order)
        texts = _texts(label, templates, gold_subjects[label], world, rng, n, taken, order)
        rng.shuffle(texts)
        test += [{"text": t, "label": label} for t in texts[:test_per_label]]
        train += [{"text": t, "label": label} for t in texts[test_per_label:]]
    rng.shuffle(test)
    rng.shuffle(train)
    test_rows = [{"id": f"test-{i:04d}", **r} for i, r in enumerate(test)]
    train_rows = [{"id": f"train-{i:04d}", **r} for i, r in enumerate(train)]

    out.mkdir(parents=True, exist_ok=True)
    labels_doc = {name: {"description": v["description"], "cues": v["cues"]} for name, v in LABELS.items()}
    header = "# Generated by `python -m dagster_project.world.topics`; do not edit by hand.\n"
    dumped = yaml.safe_dump(labels_doc, sort_keys=False, width=1000, default_flow_style=None)
    (out / "labels.yaml").write_text(header + dumped, encoding="utf-8")
    _write_jsonl(out / "corpus.jsonl", corpus_rows)
    _write_jsonl(out / "corpus_topics.jsonl", topics)
    _write_jsonl(out / "seeds.jsonl", seed_rows)
    _write_jsonl(out / "gold_test.jsonl", test_rows)
    _write_jsonl(out / "gold_train.jsonl", train_rows)
    return {
        "corpus": len(corpus_rows),
        "seeds": len(seed_rows),
        "gold_test": len(test_rows),
        "gold_train": len(train_rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate the SynthesizRR demo topic-classification task.")
    parser.add_argument("--out", default="examples/synthesizrr/data", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(generate(Path(args.out), seed=args.seed)))


if __name__ == "__main__":
    main()
