#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""tiny_decoder.py - an engine-shaped example: a tiny decoder serving a
batch of requests with its KV cache in vkv, checked against plain tensors.

The model is a 2-layer decoder with random weights (fixed seed), grouped
query attention (4 query heads over 2 KV heads) and learned positions.
The engine loop is the one of a serving engine:

  - continuous batching: requests arrive over time, are admitted while a
    slot and KV memory are free, and leave when done; every iteration runs
    prefill for newly admitted requests and one decode token for the rest;
  - one `step` per iteration: the lengths every running slot reaches in
    this iteration, before the model writes its new K/V;
  - preemption under memory pressure: when the running requests would need
    more KV pages than the budget, the most recently admitted one is
    preempted. With libvkv's tiering API it is evicted (its KV goes to host
    DRAM, its pages are freed, the tensors keep their addresses) and later
    restored; without it, its slot is freed and its tokens are recomputed
    on readmission (vLLM's "recompute" preemption);
  - attention reads the KV cache in place: K/V of a request are the views
    k[slot, :len] of vkv's tensors, passed unchanged to
    torch.nn.functional.scaled_dot_product_attention (PyTorch >= 2.0;
    the same math written out on older PyTorch).

The same schedule runs twice: once on vkv, once on plainly preallocated
tensors [max_slots, max_context, kv_heads, head_dim]. Every logit of every
generated token must be bit-for-bit equal; otherwise the example prints
what differs and exits 1.

  python3 python/examples/tiny_decoder.py [--backend host|cuda] [--json]
"""
import argparse
import json
import math
import os
import sys
import time

# cuBLAS is deterministic only with a fixed workspace (CUDA runs of the check)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vkv  # noqa: E402  (after the build-tree path above)


# ----------------------------------------------------------------- the model

class TinyDecoder:
    """Random weights, fixed seed; float32 so that the check is exact."""

    def __init__(self, seed, device, vocab=101, hidden=64, heads=4, kv_heads=2,
                 head_dim=16, layers=2, max_context=512):
        g = torch.Generator().manual_seed(seed)

        def w(*shape, scale=None):
            scale = scale or 1.0 / math.sqrt(shape[0])
            return (torch.randn(*shape, generator=g) * scale).to(device)

        self.vocab, self.hidden, self.heads = vocab, hidden, heads
        self.kv_heads, self.head_dim, self.layers = kv_heads, head_dim, layers
        self.emb = w(vocab, hidden, scale=1.0)
        self.pos = w(max_context, hidden, scale=0.1)
        self.blocks = [dict(wq=w(hidden, heads * head_dim), wk=w(hidden, kv_heads * head_dim),
                            wv=w(hidden, kv_heads * head_dim), wo=w(heads * head_dim, hidden),
                            w1=w(hidden, 4 * hidden), w2=w(4 * hidden, hidden))
                       for _ in range(layers)]

    @staticmethod
    def norm(x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    def forward(self, batch, store):
        """batch: [(slot, token_ids, start)] -- token_ids enter at positions
        start.. of that slot. Writes their K/V into the store, attends over
        the slot's cache in place, returns the logits of each entry's last
        token [len(batch), vocab]."""
        dev = self.emb.device
        ids = torch.cat([torch.tensor(t, dtype=torch.long) for _, t, _ in batch]).to(dev)
        pos = torch.cat([torch.arange(s, s + len(t)) for _, t, s in batch]).to(dev)
        x = self.emb[ids] + self.pos[pos]
        for layer, b in enumerate(self.blocks):
            h = self.norm(x)
            q, k, v = h @ b["wq"], h @ b["wk"], h @ b["wv"]
            kc, vc = store.kv(layer)
            outs, at = [], 0
            for slot, toks, start in batch:
                n = len(toks)
                kc[slot, start:start + n] = k[at:at + n].view(n, self.kv_heads, self.head_dim)
                vc[slot, start:start + n] = v[at:at + n].view(n, self.kv_heads, self.head_dim)
                outs.append(self.attend(q[at:at + n], kc[slot, :start + n],
                                        vc[slot, :start + n], start))
                at += n
            x = x + torch.cat(outs) @ b["wo"]
            x = x + F.gelu(self.norm(x) @ b["w1"]) @ b["w2"]
        last = torch.tensor([len(t) for _, t, _ in batch]).cumsum(0) - 1
        return self.norm(x[last.to(dev)]) @ self.emb.t()

    def attend(self, q, keys, values, start):
        """q [n, heads*dim] at positions start..start+n-1 over keys/values
        [L, kv_heads, dim] (views of the cache, not copied). Query heads of a
        group share their KV head: they are laid out as [kv_heads, group*n]."""
        n, L = q.shape[0], keys.shape[0]
        group = self.heads // self.kv_heads
        qg = q.view(n, self.kv_heads, group, self.head_dim).permute(1, 2, 0, 3)
        qg = qg.reshape(self.kv_heads, group * n, self.head_dim)
        kt, vt = keys.transpose(0, 1), values.transpose(0, 1)  # [kv_heads, L, dim]
        mask = None
        if n > 1:  # causal: query start+i sees keys 0..start+i
            qpos = (start + torch.arange(n, device=q.device)).repeat(group)
            mask = torch.arange(L, device=q.device)[None, :] <= qpos[:, None]
        o = sdpa(qg, kt, vt, mask)  # [kv_heads, group*n, dim]
        return o.view(self.kv_heads, group, n, self.head_dim).permute(2, 0, 1, 3).reshape(n, -1)


def sdpa(q, k, v, mask):
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    s = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


# ------------------------------------------------------------ the two stores

class VkvStore:
    """The KV cache in vkv: tensors view vkv's memory; memory is committed by
    step() and freed by evict()."""
    name = "vkv"

    def __init__(self, ctx, model, max_slots, max_context):
        self.ctx = ctx
        self.cache = ctx.cache(layers=model.layers, kv_heads=model.kv_heads,
                                    head_dim=model.head_dim, dtype=torch.float32,
                                    max_slots=max_slots, max_context=max_context)
        self.tokens_per_page = self.cache.tokens_per_page
        self.tensors = [self.cache.kv(layer) for layer in range(model.layers)]
        self.device = self.tensors[0][0].device

    def kv(self, layer):
        return self.tensors[layer]

    def alloc(self, hint):
        return self.cache.alloc(hint)

    def free(self, slot):
        self.cache.free(slot)

    def step(self, lens):
        self.cache.step(lens)

    def evict(self, slot, length):
        self.cache.evict([slot])

    def restore(self, slot, length):
        self.cache.restore([slot])

    def report(self):
        out = {"backend": self.ctx.backend, "committed_bytes": self.cache.info().committed_bytes,
               "reserved_bytes": self.cache.reserved_bytes}
        try:  # tier traffic, as vkvstat would show it
            dram = vkv.stats()["tiers"]["dram"]
            out.update(dram_evictions=dram["evictions"], dram_restores=dram["restores"],
                       dram_bytes_in=dram["bytes_in"])
        except vkv.VkvError:
            pass  # stats not published (VKV_STATS=0)
        return out

    def close(self):
        self.tensors = None
        self.cache.close()
        self.ctx.close()


class PlainStore:
    """The reference: preallocated tensors, a free list of slots, eviction as
    a copy to host memory and back."""
    name = "plain"

    def __init__(self, model, max_slots, max_context, device, tokens_per_page):
        shape = (max_slots, max_context, model.kv_heads, model.head_dim)
        self.tensors = [(torch.zeros(shape, device=device), torch.zeros(shape, device=device))
                        for _ in range(model.layers)]
        self.free_slots = list(range(max_slots))
        self.saved = {}
        self.tokens_per_page = tokens_per_page
        self.device = torch.device(device)

    def kv(self, layer):
        return self.tensors[layer]

    def alloc(self, hint):
        return self.free_slots.pop(0)

    def free(self, slot):
        self.free_slots.append(slot)

    def step(self, lens):
        pass

    def evict(self, slot, length):
        self.saved[slot] = [(k[slot, :length].cpu(), v[slot, :length].cpu())
                            for k, v in self.tensors]

    def restore(self, slot, length):
        for (k, v), (sk, sv) in zip(self.tensors, self.saved.pop(slot)):
            k[slot, :length] = sk.to(k.device)
            v[slot, :length] = sv.to(v.device)

    def report(self):
        return {}

    def close(self):
        self.tensors = None


# -------------------------------------------------------------- the engine

def make_requests(seed, count, vocab):
    g = torch.Generator().manual_seed(seed + 1)
    reqs = []
    for i in range(count):
        plen = int(torch.randint(4, 48, (1,), generator=g))
        reqs.append(dict(id=i, arrival=i // 2,
                         prompt=torch.randint(0, vocab, (plen,), generator=g).tolist(),
                         max_new=int(torch.randint(8, 64, (1,), generator=g))))
    return reqs


def serve(model, store, requests, max_slots, budget_pages, swap, block=None):
    """Run every request to completion; returns ({id: tokens}, {id: logits},
    counters). The schedule depends only on the requests and the budget, so
    both stores run exactly the same batches."""
    tpp = block or store.tokens_per_page  # tokens per budget unit
    waiting = [dict(r, out=[], logits=[], slot=None, length=0) for r in requests]
    swapped, running, done = [], [], {}
    counters = dict(iterations=0, preemptions=0, restores=0, recomputes=0, steps=0)

    def pages(n):
        return -(-n // tpp)

    def need(r):  # tokens this request holds after this iteration
        return len(r["prompt"]) + len(r["out"]) if r["length"] == 0 else r["length"] + 1

    it = 0
    while waiting or swapped or running:
        # admission: swapped requests first (FIFO; they still hold their
        # slot), then new arrivals while a slot is free
        for queue in (swapped, waiting):
            while queue and (queue is swapped or (queue[0]["arrival"] <= it and
                                                  len(running) + len(swapped) < max_slots)) and \
                    sum(pages(need(r)) for r in running) + pages(need(queue[0])) <= budget_pages:
                r = queue.pop(0)
                if r["slot"] is None:
                    r["slot"] = store.alloc(len(r["prompt"]) + r["max_new"])
                else:
                    store.restore(r["slot"], r["length"])
                    counters["restores"] += 1
                running.append(r)
        # preemption: the most recently admitted goes first
        while running and sum(pages(need(r)) for r in running) > budget_pages:
            r = running.pop()
            counters["preemptions"] += 1
            if swap:
                store.evict(r["slot"], r["length"])
            else:  # recompute: forget the KV, rerun prompt + output later
                store.free(r["slot"])
                r["slot"], r["length"] = None, 0
                counters["recomputes"] += 1
            (swapped if swap else waiting).insert(0, r)
        if running:
            store.step({r["slot"]: need(r) for r in running})
            counters["steps"] += 1
            batch = []
            for r in running:
                if r["length"] == 0:
                    toks = r["prompt"] + r["out"]
                else:
                    toks = [r["out"][-1]]
                batch.append((r["slot"], toks, r["length"]))
            logits = model.forward(batch, store)
            for r, lg in zip(running, logits):
                r["length"] = need(r)
                r["out"].append(int(lg.argmax()))
                r["logits"].append(lg.cpu())
            for r in [r for r in running if len(r["out"]) >= r["max_new"]]:
                running.remove(r)
                store.free(r["slot"])
                done[r["id"]] = r
        it += 1
    counters["iterations"] = it
    return ({i: r["out"] for i, r in done.items()},
            {i: torch.stack(r["logits"]) for i, r in done.items()}, counters)


def compare(a, b):
    """Differences between two runs' (tokens, logits) as a list of strings."""
    bad = []
    for i in sorted(set(a[0]) | set(b[0])):
        if a[0].get(i) != b[0].get(i):
            bad.append("request %d: tokens differ: %s vs %s" % (i, a[0].get(i), b[0].get(i)))
        elif not torch.equal(a[1][i], b[1][i]):
            d = (a[1][i] - b[1][i]).abs().max().item()
            bad.append("request %d: logits differ (max abs diff %g)" % (i, d))
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="host", help="vkv backend: host, cuda, auto")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--max-slots", type=int, default=4)
    ap.add_argument("--max-context", type=int, default=512)
    ap.add_argument("--budget-pages", type=int, default=0,
                    help="KV blocks (a page, at most 64 tokens) per tensor the running "
                    "requests may hold (0: half the peak demand, so that preemption happens)")
    ap.add_argument("--preempt", choices=("auto", "swap", "recompute"), default="auto",
                    help="swap = evict/restore (needs libvkv's tiering API)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    ctx = vkv.Context(backend=args.backend, page_size="4K" if args.backend == "host" else None)
    device = "cpu" if ctx.device is None else "cuda:%d" % ctx.device
    if ctx.device is not None:  # vkv waits for this stream before unmapping
        ctx.set_stream(torch.cuda.current_stream(ctx.device))
    model = TinyDecoder(args.seed, device, max_context=args.max_context)
    store = VkvStore(ctx, model, args.max_slots, args.max_context)
    requests = make_requests(args.seed, args.requests, model.vocab)
    swap = args.preempt == "swap" or (args.preempt == "auto" and vkv.has_tiering())
    if swap and not vkv.has_tiering():
        print("tiny_decoder: --preempt swap needs libvkv's tiering API", file=sys.stderr)
        return 2
    # The schedule budgets KV in blocks of at most 64 tokens: a 2 MiB GPU
    # page holds thousands of this tiny model's tokens, and a budget in
    # whole pages would never preempt anything.
    tpp = min(store.tokens_per_page, 64)
    biggest = max(-(-(len(r["prompt"]) + r["max_new"]) // tpp) for r in requests)
    budget = args.budget_pages or max(args.max_slots * biggest // 2, biggest)

    plain = PlainStore(model, args.max_slots, args.max_context, device, tpp)
    t0 = time.perf_counter()
    ref = serve(model, plain, requests, args.max_slots, budget, swap, tpp)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = serve(model, store, requests, args.max_slots, budget, swap, tpp)
    t_vkv = time.perf_counter() - t0
    bad = compare(got, ref)
    report = dict(ok=not bad, requests=len(requests), tokens=sum(len(t) for t in got[0].values()),
                  preemption="swap" if swap else "recompute", budget_pages=budget,
                  tokens_per_page=store.tokens_per_page, block_tokens=tpp, vkv_s=round(t_vkv, 3), plain_s=round(t_plain, 3),
                  sdpa=hasattr(F, "scaled_dot_product_attention"), torch=torch.__version__,
                  device=str(device), **got[2], **store.report())
    store.close()
    plain.close()
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print("%-16s %s" % (k, v))
    for line in bad:
        print("tiny_decoder: MISMATCH: " + line, file=sys.stderr)
    if report["preemptions"] == 0:
        print("tiny_decoder: the schedule preempted nothing; lower --budget-pages",
              file=sys.stderr)
        return 1
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
