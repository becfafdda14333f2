import pytest

from jeroboam.orchestration.graph import CycleError, Graph, Walker


def test_topological_order_puts_requirements_first():
    graph = Graph({"tail": ["srv"], "srv": ["net", "key"], "net": [], "key": []})
    order = graph.topological_order()
    assert order.index("srv") > order.index("net")
    assert order.index("srv") > order.index("key")
    assert order[-1] == "tail"


def test_requirements_outside_the_graph_are_ignored():
    graph = Graph({"a": ["ghost"]})
    assert graph.requires["a"] == frozenset()


def test_cycles_name_only_their_members():
    graph = Graph({"a": ["b"], "b": ["a"], "c": ["a"], "d": ["d"], "e": []})
    assert sorted(graph.cycles()) == [["a", "b"], ["d"]]
    with pytest.raises(CycleError) as info:
        graph.check_acyclic()
    assert info.value.nodes == ["a", "b", "d"]
    with pytest.raises(CycleError):
        graph.topological_order()


def test_without_cycles_keeps_the_other_edges():
    graph = Graph({"a": ["b"], "b": ["a"], "c": ["a"]}).without_cycles()
    assert graph.cycles() == []
    assert graph.requires["c"] == {"a"}


def test_walker_ready_sets_forward_and_reverse():
    graph = Graph({"a": [], "b": [], "c": ["a", "b"], "d": ["c"]})
    forward = Walker(graph)
    assert sorted(forward.start()) == ["a", "b"]
    assert forward.done("a") == []
    assert forward.done("b") == ["c"]
    assert forward.done("c") == ["d"]
    reverse = Walker(graph, reverse=True)
    assert reverse.start() == ["d"]
    assert reverse.done("d") == ["c"]
    assert sorted(reverse.done("c")) == ["a", "b"]


def test_long_chains_do_not_recurse():
    n = 20000
    graph = Graph({i: [i - 1] if i else [] for i in range(n)})
    assert graph.cycles() == []
    assert graph.topological_order() == list(range(n))
