"""Dependency graph of a stack's resources: order, cycles and ready sets."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping


class CycleError(Exception):
    def __init__(self, nodes: list):
        super().__init__("circular dependency between " + ", ".join(map(str, nodes)))
        self.nodes = nodes


class Graph:
    """Nodes and "requires" edges: node -> the nodes that must be done before it.

    Requirements that are not nodes themselves are ignored.
    """

    def __init__(self, requires: Mapping[Hashable, Iterable[Hashable]]):
        self.requires = {n: frozenset(r for r in reqs if r in requires) for n, reqs in requires.items()}
        self.required_by: dict = {n: set() for n in self.requires}
        for node, reqs in self.requires.items():
            for req in reqs:
                self.required_by[req].add(node)

    def __len__(self) -> int:
        return len(self.requires)

    def cycles(self) -> list[list]:
        """Every set of nodes that depend on each other (strongly connected), each sorted."""
        # Iterative Tarjan: a recursive one would hit the recursion limit on long chains.
        index: dict = {}
        low: dict = {}
        on_stack: set = set()
        stack: list = []
        found = []
        counter = 0
        for root in self.requires:
            if root in index:
                continue
            work = [(root, iter(self.requires[root]))]
            index[root] = low[root] = counter
            counter += 1
            stack.append(root)
            on_stack.add(root)
            while work:
                node, it = work[-1]
                for nxt in it:
                    if nxt not in index:
                        index[nxt] = low[nxt] = counter
                        counter += 1
                        stack.append(nxt)
                        on_stack.add(nxt)
                        work.append((nxt, iter(self.requires[nxt])))
                        break
                    if nxt in on_stack:
                        low[node] = min(low[node], index[nxt])
                else:
                    work.pop()
                    if work:
                        parent = work[-1][0]
                        low[parent] = min(low[parent], low[node])
                    if low[node] == index[node]:
                        component = []
                        while True:
                            member = stack.pop()
                            on_stack.discard(member)
                            component.append(member)
                            if member == node:
                                break
                        if len(component) > 1 or node in self.requires[node]:
                            found.append(sorted(component, key=str))
        return found

    def check_acyclic(self) -> None:
        cycles = self.cycles()
        if cycles:
            raise CycleError(sorted((n for c in cycles for n in c), key=str))

    def without_cycles(self) -> "Graph":
        """A copy with the edges inside every cycle removed (best-effort order for cleanup)."""
        cycles = self.cycles()
        if not cycles:
            return self
        members = [set(c) for c in cycles]
        requires = {}
        for node, reqs in self.requires.items():
            group = next((m for m in members if node in m), None)
            requires[node] = reqs - group if group else reqs
        return Graph(requires)

    def topological_order(self) -> list:
        """Nodes with every node after all the nodes it requires."""
        walker = Walker(self)
        order = []
        ready = walker.start()
        while ready:
            node = ready.pop()
            order.append(node)
            ready.extend(walker.done(node))
        if len(order) != len(self.requires):
            self.check_acyclic()
        return order


class Walker:
    """Hands out nodes as they become ready.

    Forward: a node is ready once every node it requires is done. Reverse (for
    deletion): once every node that requires it is done.
    """

    def __init__(self, graph: Graph, reverse: bool = False):
        self._before = graph.required_by if reverse else graph.requires
        self._after = graph.requires if reverse else graph.required_by
        self._waiting = {n: len(b) for n, b in self._before.items()}

    def start(self) -> list:
        return [n for n, count in self._waiting.items() if count == 0]

    def done(self, node) -> list:
        """Mark node done; return the nodes that became ready because of it."""
        ready = []
        for nxt in self._after[node]:
            self._waiting[nxt] -= 1
            if self._waiting[nxt] == 0:
                ready.append(nxt)
        return ready
