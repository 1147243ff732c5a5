"""A conversation graph (CoDi's steering spec): turn types as nodes, a Markov chain over them.

The spec is a YAML file (see `examples/codi/prompts/graph.yaml` and docs/recipes.md, "Conversation
graphs"):

    turn_prompt: prompts/codi_turn.yaml   # the teacher prompt of every turn (a node may name its own)
    refusal: unknown                      # the answer of every unanswerable turn
    length: {min_turns: 2, max_turns: 6}  # turns per conversation
    start: {factoid: 0.8, summary: 0.2}   # the first turn's type
    nodes:
      factoid:
        augmentation: Ask about one fact the passage states, naming its subject.   # the node's prompt text
        answer: span                      # span | evidence | yes_no | refusal: how its answer is checked
        next: {followup: 0.5, unanswerable: 0.2, end: 0.3}   # edges; each row sums to 1
    phenomena:
      coreference: {rate: 0.5, augmentation: Refer to the subject with a pronoun., nodes: [followup]}

`load_spec` validates it whole before any work and raises `SpecError` listing every problem with its key
(a row not summing to 1 names the node and its sum; an edge to an unknown node names both; a node
without a prompt names the node). `sample_path` draws one conversation's turn types: the first from
`start`, each next one from the current node's row; `end` stops the conversation, except before
`min_turns` turns, where the `end` edge is masked and the rest of the row renormalised; at `max_turns`
it stops. `sample_phenomena` draws each phenomenon allowed at a node (and turn: `from_turn`, e.g. 2 for
coreference, which needs an earlier turn) independently with its rate.
"""

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

END = "end"  # the reserved target of an edge that ends the conversation
ANSWER_CHECKS = ("span", "evidence", "yes_no", "refusal")
TOLERANCE = 1e-6


class SpecError(ValueError):
    """The conversation graph spec cannot be used; the message names every problem and its key."""


@dataclass(frozen=True)
class Node:
    """One turn type: its prompt augmentation, the prompt file it uses, how its answer is checked,
    and its outgoing edges (target -> probability; `end` included)."""

    name: str
    augmentation: str
    prompt: str
    answer: str
    next: dict[str, float]


@dataclass(frozen=True)
class Phenomenon:
    """A linguistic phenomenon injected into a turn with probability `rate` (at `nodes`, or all)."""

    name: str
    rate: float
    augmentation: str
    nodes: tuple[str, ...]
    from_turn: int = 1  # the first turn (1-based) it may apply to: 2 for coreference/ellipsis


@dataclass(frozen=True)
class Spec:
    """A validated conversation graph."""

    path: str
    refusal: str
    min_turns: int
    max_turns: int
    start: dict[str, float]
    nodes: dict[str, Node]
    phenomena: dict[str, Phenomenon] = field(default_factory=dict)

    def edges(self) -> list[tuple[str, str]]:
        """Every edge with a probability above 0 (node -> node, node -> end)."""
        return [(n.name, t) for n in self.nodes.values() for t, p in n.next.items() if p > 0]

    def row(self, node: str, step: int) -> dict[str, float]:
        """The transition row of `node` after `step` turns (1-based): `end` masked and the rest
        renormalised while `step < min_turns`."""
        row = {t: p for t, p in self.nodes[node].next.items() if p > 0}
        if step < self.min_turns and END in row:
            row.pop(END)
            total = sum(row.values())
            if total <= 0:  # only `end` leads on: validation rejects such a graph with min_turns > 1
                return {END: 1.0}
            row = {t: p / total for t, p in row.items()}
        return row

    def possible_paths(self) -> int:
        """How many distinct turn-type sequences `sample_path` can produce (lengths min..max)."""
        counts = {n: 1 for n, p in self.start.items() if p > 0}  # paths of length 1 ending at n
        total = 0
        for step in range(1, self.max_turns + 1):
            if step == self.max_turns:
                total += sum(counts.values())
                break
            nxt: dict[str, int] = {}
            for node, k in counts.items():
                for target in self.row(node, step):
                    if target == END:
                        total += k
                    else:
                        nxt[target] = nxt.get(target, 0) + k
            counts = nxt
        return total


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _row_problems(key: str, row: Any, known: set[str], allow_end: bool) -> list[str]:
    if not isinstance(row, Mapping) or not row:
        return [f"{key}: a mapping of target node -> probability (e.g. {{followup: 0.6, end: 0.4}})"]
    problems = []
    for target, p in row.items():
        value = _num(p)
        if target == END and not allow_end:
            problems.append(f"{key}: `end` cannot be a first turn")
        elif target != END and target not in known:
            close = ", ".join(sorted(known))
            problems.append(f"{key}: unknown node {target!r}; the nodes are: {close} (and `end`)")
        if value is None or value < 0 or value > 1:
            problems.append(f"{key}.{target}: {p!r} is not a probability in [0, 1]")
    values = [_num(p) for p in row.values()]
    if all(v is not None for v in values):
        total = sum(values)  # type: ignore[arg-type]
        if abs(total - 1.0) > TOLERANCE:
            problems.append(f"{key}: probabilities sum to {total:.6g}, not 1; fix that node's row")
    return problems


def parse_spec(data: Any, path: str, root: Path | None = None) -> Spec:
    """Validate a parsed spec (`root`: the folder prompt paths are relative to; None: not checked)."""
    if not isinstance(data, Mapping):
        raise SpecError(f"{path}: a YAML mapping with nodes, start, length and refusal")
    problems: list[str] = []
    allowed = {"name", "description", "turn_prompt", "refusal", "length", "start", "nodes", "phenomena"}
    problems += [
        f"{path}: {k}: unknown key; allowed: {', '.join(sorted(allowed))}" for k in data if k not in allowed
    ]
    nodes_raw = data.get("nodes")
    if not isinstance(nodes_raw, Mapping) or not nodes_raw:
        raise SpecError(f"{path}: nodes: a mapping of turn type -> {{augmentation, answer, next}} is needed")
    known = {str(n) for n in nodes_raw}
    if END in known:
        problems.append(f"{path}: nodes.{END}: `end` is reserved (the edge target that ends a conversation)")
    default_prompt = data.get("turn_prompt")
    refusal = data.get("refusal")
    if not isinstance(refusal, str) or not refusal.strip():
        problems.append(
            f"{path}: refusal: the answer of unanswerable turns, a non-empty string (e.g. unknown)"
        )
    length = data.get("length") or {}
    lo, hi = length.get("min_turns", 1), length.get("max_turns")
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        problems.append(
            f"{path}: length: {{min_turns, max_turns}}, integers with 1 <= min_turns <= max_turns"
        )
        lo, hi = 1, 1
    problems += _row_problems(f"{path}: start", data.get("start"), known, allow_end=False)
    nodes: dict[str, Node] = {}
    for name, raw in nodes_raw.items():
        key = f"{path}: nodes.{name}"
        if not isinstance(raw, Mapping):
            problems.append(f"{key}: a mapping {{augmentation, answer, next}}")
            continue
        extra = [k for k in raw if k not in ("augmentation", "prompt", "answer", "next", "description")]
        problems += [f"{key}.{k}: unknown key; allowed: augmentation, prompt, answer, next" for k in extra]
        augmentation = raw.get("augmentation")
        prompt = raw.get("prompt", default_prompt)
        if not isinstance(augmentation, str) or not augmentation.strip():
            problems.append(f"{key}: missing prompt: give the node an `augmentation` (its instruction text)")
            augmentation = ""
        if not isinstance(prompt, str) or not prompt:
            problems.append(
                f"{key}: missing prompt: give the node a `prompt` file or the spec a `turn_prompt`"
            )
            prompt = ""
        elif root is not None and not (root / prompt).is_file():
            problems.append(f"{key}: prompt file {prompt} not found (relative to {root})")
        answer = raw.get("answer", "span")
        if answer not in ANSWER_CHECKS:
            problems.append(f"{key}.answer: {answer!r}; allowed: {', '.join(ANSWER_CHECKS)}")
        row = raw.get("next")
        problems += _row_problems(f"{key}.next", row, known, allow_end=True)
        nxt = (
            {str(t): float(p) for t, p in row.items() if _num(p) is not None}
            if isinstance(row, Mapping)
            else {}
        )
        nodes[str(name)] = Node(str(name), str(augmentation), str(prompt), str(answer), nxt)
    phenomena: dict[str, Phenomenon] = {}
    for name, raw in (data.get("phenomena") or {}).items():
        key = f"{path}: phenomena.{name}"
        if not isinstance(raw, Mapping):
            problems.append(f"{key}: a mapping {{rate, augmentation, nodes}}")
            continue
        rate = _num(raw.get("rate"))
        if rate is None or not 0 <= rate <= 1:
            problems.append(f"{key}.rate: {raw.get('rate')!r} is not a probability in [0, 1]")
        if not isinstance(raw.get("augmentation"), str) or not raw["augmentation"].strip():
            problems.append(f"{key}: missing prompt: give the phenomenon an `augmentation`")
        from_turn = raw.get("from_turn", 1)
        if not isinstance(from_turn, int) or isinstance(from_turn, bool) or from_turn < 1:
            problems.append(f"{key}.from_turn: {from_turn!r}; the first turn it applies to, an integer >= 1")
            from_turn = 1
        extra = [k for k in raw if k not in ("rate", "augmentation", "nodes", "from_turn", "description")]
        problems += [f"{key}.{k}: unknown key; allowed: rate, augmentation, nodes, from_turn" for k in extra]
        at = raw.get("nodes", list(known))
        unknown = [n for n in at if n not in known] if isinstance(at, list) else [at]
        problems += [f"{key}.nodes: unknown node {n!r}" for n in unknown]
        nodes_at = tuple(at) if isinstance(at, list) else ()
        phenomena[str(name)] = Phenomenon(
            str(name), rate or 0.0, str(raw.get("augmentation", "")), nodes_at, from_turn
        )
    if problems:
        raise SpecError("\n".join(problems))
    start = {str(t): float(p) for t, p in data["start"].items()}
    spec = Spec(path, refusal.strip(), lo, hi, start, nodes, phenomena)
    for name in nodes:
        if lo > 1 and set(spec.row(name, 1)) == {END}:
            problems.append(f"{path}: nodes.{name}.next: only `end` leads on, but min_turns is {lo}")
    if problems:
        raise SpecError("\n".join(problems))
    return spec


def load_spec(path: str | Path, root: str | Path | None = None, label: str | None = None) -> Spec:
    """Read and validate a spec file; prompt paths are checked relative to `root` (default: none);
    messages name the file as `label` (default: its path)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    return parse_spec(data, label or str(path), Path(root) if root is not None else None)


def _draw(row: Mapping[str, float], rng: random.Random) -> str:
    u, acc = rng.random(), 0.0
    items = list(row.items())
    for target, p in items:
        acc += p
        if u < acc:
            return target
    return items[-1][0]  # rounding: the last target


def conversation_rng(seed: int, index: int | str) -> random.Random:
    """The generator of one conversation: a hash of (seed, index), stable when others are added."""
    digest = hashlib.sha256(f"{seed}\x1f{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def sample_path(spec: Spec, rng: random.Random) -> list[str]:
    """One conversation's turn types (see the module doc)."""
    path = [_draw({t: p for t, p in spec.start.items() if p > 0}, rng)]
    while len(path) < spec.max_turns:
        target = _draw(spec.row(path[-1], len(path)), rng)
        if target == END:
            break
        path.append(target)
    return path


def sample_phenomena(spec: Spec, node: str, rng: random.Random, turn: int = 1) -> list[str]:
    """The phenomena injected into turn `turn` (1-based) of type `node`, each drawn with its rate
    where it applies (its nodes, from its `from_turn`); one draw per phenomenon either way, so a
    conversation's draws do not shift with its path."""
    drawn = [(p, rng.random()) for p in spec.phenomena.values()]
    return [p.name for p, u in drawn if node in p.nodes and turn >= p.from_turn and u < p.rate]


def transition_counts(paths: Sequence[Sequence[str]]) -> dict[tuple[str, str], int]:
    """(from, to) -> count over paths; a path's last turn goes to `end`."""
    counts: dict[tuple[str, str], int] = {}
    for path in paths:
        for a, b in zip(path, [*path[1:], END], strict=True):
            counts[(a, b)] = counts.get((a, b), 0) + 1
    return counts


def coverage(spec: Spec, paths: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Graph coverage of realised paths: nodes, edges (incl. to `end`) and distinct paths, each as
    visited / possible (a path cut short by `max_turns` ends without an `end` edge: not counted)."""
    visited_nodes = {n for p in paths for n in p}
    edges = set(spec.edges())
    visited_edges = set()
    for path in paths:
        visited_edges |= {(a, b) for a, b in zip(path, path[1:], strict=False)}
        if len(path) < spec.max_turns:
            visited_edges.add((path[-1], END))
    possible = spec.possible_paths()
    distinct = len({tuple(p) for p in paths})
    return {
        "nodes_visited": len(visited_nodes & set(spec.nodes)),
        "nodes": len(spec.nodes),
        "edges_visited": len(visited_edges & edges),
        "edges": len(edges),
        "distinct_paths": distinct,
        "possible_paths": possible,
        "path_coverage": distinct / possible if possible else 0.0,
        "log10_possible_paths": math.log10(possible) if possible else 0.0,
    }
