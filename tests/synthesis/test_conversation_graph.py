"""The conversation graph (CoDi's steering spec): validation before work, seeded Markov sampling whose
empirical transition frequencies match the spec, path counting and coverage."""

import copy

import pytest

from dagster_project.synthesis.conversation_graph import (
    END,
    SpecError,
    conversation_rng,
    coverage,
    parse_spec,
    sample_path,
    sample_phenomena,
    transition_counts,
)

SPEC = {
    "turn_prompt": "prompts/turn.yaml",
    "refusal": "unknown",
    "length": {"min_turns": 1, "max_turns": 8},
    "start": {"a": 0.6, "b": 0.4},
    "nodes": {
        "a": {"augmentation": "Ask A.", "next": {"a": 0.1, "b": 0.5, "c": 0.2, "end": 0.2}},
        "b": {"augmentation": "Ask B.", "next": {"a": 0.3, "c": 0.3, "end": 0.4}},
        "c": {"augmentation": "Ask C.", "answer": "refusal", "next": {"a": 0.5, "end": 0.5}},
    },
    "phenomena": {"ellipsis": {"rate": 0.3, "augmentation": "Drop words.", "nodes": ["a", "b"]}},
}


def _spec(**changes):
    data = copy.deepcopy(SPEC)
    for key, value in changes.items():
        data[key] = value
    return data


def test_empirical_transition_frequencies_match_the_spec_over_20k_seeded_paths():
    spec = parse_spec(SPEC, "graph.yaml")
    paths = [sample_path(spec, conversation_rng(7, i)) for i in range(20_000)]
    counts = transition_counts(paths)
    # paths cut at max_turns have no outgoing edge from their last turn: count those steps out
    cut = {}
    for p in paths:
        if len(p) == spec.max_turns:
            cut[p[-1]] = cut.get(p[-1], 0) + 1
            counts[(p[-1], END)] -= 1
    for node in spec.nodes.values():
        total = sum(v for (a, _), v in counts.items() if a == node.name)
        assert total > 3000, node.name
        for target, p in node.next.items():
            observed = counts.get((node.name, target), 0) / total
            stderr = (p * (1 - p) / total) ** 0.5
            assert abs(observed - p) < 4 * stderr + 1e-9, (node.name, target, observed, p)
    first = sum(p[0] == "a" for p in paths) / len(paths)
    assert abs(first - 0.6) < 4 * (0.24 / len(paths)) ** 0.5


def test_sampling_is_seeded_and_respects_length_bounds():
    spec = parse_spec(_spec(length={"min_turns": 3, "max_turns": 4}), "graph.yaml")
    paths = [sample_path(spec, conversation_rng(0, i)) for i in range(2000)]
    assert all(3 <= len(p) <= 4 for p in paths)
    assert paths[:50] == [sample_path(spec, conversation_rng(0, i)) for i in range(50)]
    assert paths[:50] != [sample_path(spec, conversation_rng(1, i)) for i in range(50)]


def test_phenomena_are_drawn_with_their_rates_at_their_nodes_only():
    spec = parse_spec(SPEC, "graph.yaml")
    rng = conversation_rng(0, "p")
    drawn = [sample_phenomena(spec, "a", rng) for _ in range(10_000)]
    assert abs(sum(bool(d) for d in drawn) / 10_000 - 0.3) < 0.02
    assert all(sample_phenomena(spec, "c", rng) == [] for _ in range(100))


def test_a_row_not_summing_to_one_names_the_node_and_its_sum():
    data = _spec()
    data["nodes"]["b"]["next"] = {"a": 0.3, "c": 0.3, "end": 0.3}
    with pytest.raises(SpecError, match=r"nodes\.b\.next: probabilities sum to 0\.9, not 1"):
        parse_spec(data, "graph.yaml")


def test_an_edge_to_an_unknown_node_is_named():
    data = _spec()
    data["nodes"]["a"]["next"] = {"a": 0.5, "summary": 0.5}
    with pytest.raises(SpecError, match=r"nodes\.a\.next: unknown node 'summary'; the nodes are: a, b, c"):
        parse_spec(data, "graph.yaml")


def test_a_node_without_a_prompt_is_named():
    data = _spec()
    del data["nodes"]["c"]["augmentation"]
    with pytest.raises(SpecError, match=r"nodes\.c: missing prompt"):
        parse_spec(data, "graph.yaml")
    data = _spec()
    del data["turn_prompt"]
    with pytest.raises(SpecError, match=r"nodes\.a: missing prompt: give the node a `prompt` file"):
        parse_spec(data, "graph.yaml")


def test_a_missing_prompt_file_and_bad_values_are_named(tmp_path):
    data = _spec(length={"min_turns": 5, "max_turns": 2}, refusal="")
    data["phenomena"]["ellipsis"]["rate"] = 1.5
    with pytest.raises(SpecError) as err:
        parse_spec(data, "graph.yaml", tmp_path)
    message = str(err.value)
    for part in ("prompt file prompts/turn.yaml not found", "length:", "refusal:", "phenomena.ellipsis.rate"):
        assert part in message


def test_possible_paths_are_counted_and_coverage_reports_visited_vs_possible():
    data = _spec(length={"min_turns": 1, "max_turns": 2}, start={"a": 1.0})
    spec = parse_spec(data, "graph.yaml")
    # length 1: [a]; length 2: a->a, a->b, a->c
    assert spec.possible_paths() == 4
    cov = coverage(spec, [["a"], ["a", "b"], ["a", "b"]])
    assert cov["distinct_paths"] == 2 and cov["possible_paths"] == 4
    assert cov["nodes_visited"] == 2 and cov["nodes"] == 3
    assert cov["edges_visited"] == 2  # a->b and a->end (a 2-turn path is cut at max_turns)
    assert cov["edges"] == 9
