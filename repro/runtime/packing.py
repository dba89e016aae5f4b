"""Padding-free batches, shared by the training core and log-probability scoring.

Examples are concatenated into one row whose position ids restart at every example; with no attention mask and no
KV cache, transformers builds a block-diagonal causal mask from those position ids, so examples never attend to
each other and no compute is spent on padding. Only positions that predict a response token need the LM head
(``logits_to_keep``), which on a 50k-150k vocabulary is most of the memory of a forward pass.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from repro.runtime.chat import EncodedPair


def greedy_groups(indices: Sequence[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive groups of `indices` whose lengths sum to at most `budget` (an over-long item stands alone)."""
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in indices:
        if current and used + lengths[i] > budget:
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += lengths[i]
    if current:
        groups.append(current)
    return groups


def packed_batch(pairs: Sequence[EncodedPair], device) -> dict:
    """One row of concatenated examples: model inputs, labels (-100 on prompts) and the positions that predict a
    trained token (each example's first label is a prompt token, so no position predicts across examples)."""
    ids, pos, labels = [], [], []
    for p in pairs:
        ids += p.input_ids
        pos += range(len(p.input_ids))
        labels += p.labels()
    labels_t = torch.tensor([labels], device=device)
    keep = (labels_t[0, 1:] != -100).nonzero().squeeze(-1)
    return {"inputs": {"input_ids": torch.tensor([ids], device=device),
                       "position_ids": torch.tensor([pos], device=device)},
            "keep": keep, "targets": labels_t[0, 1:][keep]}


def packed_logits(model, batch: dict):
    """Logits at the positions that predict response tokens, shape [n_response_tokens, vocab]."""
    out = model(**batch["inputs"], use_cache=False, logits_to_keep=batch["keep"])
    return out.logits[0]


# ------------------------------------------------------------------------------------ shared-prefix scoring
# Scoring many sequences that share prefixes (an item's context before each of its answer choices, a few-shot block
# before every item of a task, a training prompt before each of its candidates) is done on a token trie: every
# distinct prefix is run through the model once. A subtree that fits the token budget is packed into a row with
# other subtrees, and a block mask lets each token see exactly its own ancestors (tree attention). A subtree too
# big for one row (a few-shot preamble with all the items under it) runs its shared segment once, keeps its KV
# cache, and packs its children in rows on top of that cache.

class PrefixTree:
    """A token trie over sequences, compressed into segments (maximal single-child chains of nodes).

    Node ids index ``token``/``depth``; node 0 is the empty root. ``wants[node]`` lists (request, k, target) for
    the scored positions: the logits at ``node`` predict ``target``, token ``k`` of that request's scored part.
    """

    def __init__(self, seqs: Sequence[Sequence[int]], n_scored: Sequence[int]) -> None:
        self.token: list[int] = [-1]
        self.depth: list[int] = [0]
        children: list[dict[int, int]] = [{}]
        self.wants: dict[int, list[tuple[int, int, int]]] = {}
        for r, (seq, n) in enumerate(zip(seqs, n_scored)):
            if not 1 <= n < len(seq):
                raise ValueError(f"request {r}: {n} scored tokens of a {len(seq)}-token sequence (need 1..len-1)")
            node, path = 0, []
            for t in seq[:-1]:            # the last token is only a target, never an input
                nxt = children[node].get(t)
                if nxt is None:
                    nxt = len(self.token)
                    children[node][t] = nxt
                    children.append({})
                    self.token.append(int(t))
                    self.depth.append(self.depth[node] + 1)
                node = nxt
                path.append(node)
            start = len(seq) - 1 - n
            for k in range(n):
                self.wants.setdefault(path[start + k], []).append((r, k, int(seq[start + 1 + k])))
        # segments: a node starts one when its parent is the root or branches
        self.seg_nodes: list[list[int]] = []
        self.seg_children: list[list[int]] = []
        roots: list[int] = []
        stack = [(child, None) for child in reversed(list(children[0].values()))]
        while stack:
            node, parent_seg = stack.pop()
            seg = len(self.seg_nodes)
            nodes = [node]
            while len(children[node]) == 1:
                node = next(iter(children[node].values()))
                nodes.append(node)
            self.seg_nodes.append(nodes)
            self.seg_children.append([])
            (roots if parent_seg is None else self.seg_children[parent_seg]).append(seg)
            stack.extend((child, seg) for child in reversed(list(children[node].values())))
        self.roots = roots
        self.subtree_tokens = [0] * len(self.seg_nodes)
        for seg in reversed(range(len(self.seg_nodes))):   # children are numbered after their parent
            self.subtree_tokens[seg] = len(self.seg_nodes[seg]) + sum(self.subtree_tokens[c]
                                                                      for c in self.seg_children[seg])

    @property
    def n_nodes(self) -> int:
        return len(self.token) - 1

    def preorder(self, seg: int) -> list[int]:
        out, stack = [], [seg]
        while stack:
            s = stack.pop()
            out.append(s)
            stack.extend(reversed(self.seg_children[s]))
        return out


def tree_row(tree: PrefixTree, tops: Sequence[int], n_cached: int, device) -> dict:
    """One packed row holding the whole subtrees under segments ``tops`` (all children of the same cached context
    of ``n_cached`` tokens): input ids, position ids, a boolean [1, 1, L, n_cached + L] mask in which a token sees
    the cached context, its ancestors and the earlier tokens of its own segment, and the nodes whose logits are
    wanted."""
    nodes, seg_of_tok, last = [], [], []
    for top in tops:
        order = tree.preorder(top)
        span_end: dict[int, int] = {}
        for s in reversed(order):                        # preorder index range of each segment's subtree
            span_end[s] = max([span_end[c] for c in tree.seg_children[s]], default=s)
        for s in order:
            nodes += tree.seg_nodes[s]
            seg_of_tok += [s] * len(tree.seg_nodes[s])
            last += [span_end[s]] * len(tree.seg_nodes[s])
    # Segment ids are assigned in preorder, so "j's segment is an ancestor of (or is) i's" is an interval test.
    seg = torch.tensor(seg_of_tok, device=device)
    hi = torch.tensor(last, device=device)
    n = len(nodes)
    pos = torch.arange(n, device=device)
    visible = (seg[None, :] <= seg[:, None]) & (seg[:, None] <= hi[None, :]) & (pos[None, :] <= pos[:, None])
    if n_cached:
        visible = torch.cat([torch.ones(n, n_cached, dtype=torch.bool, device=device), visible], dim=1)
    keep = [i for i, node in enumerate(nodes) if node in tree.wants]
    return {"input_ids": torch.tensor([[tree.token[x] for x in nodes]], device=device),
            "position_ids": torch.tensor([[tree.depth[x] - 1 for x in nodes]], device=device),
            "mask": visible[None, None], "nodes": nodes, "keep": keep}
