# SPDX-License-Identifier: MIT
"""torch_workload.py - a small PyTorch workload for tests/gpu/shim_torch.sh.

Run once without and once under LD_PRELOAD=libvkv_preload.so: it does
matrix products of several sizes and a few training steps of a small MLP,
deterministically, and prints one JSON object with what it computed (sums
in float64, in a fixed order) and the memory PyTorch saw. shim_torch.sh compares
the results of the runs: they must be identical.

Exit status 77 when torch or a CUDA device is missing.
"""
import json
import os
import sys

# Deterministic cuBLAS; read when its handle is created.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

try:
    import torch
except ImportError:
    print("shim_torch.py: SKIP: no torch", file=sys.stderr)
    sys.exit(77)
if not torch.cuda.is_available():
    print("shim_torch.py: SKIP: torch sees no CUDA device", file=sys.stderr)
    sys.exit(77)

torch.manual_seed(1234)
torch.use_deterministic_algorithms(True)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = torch.device("cuda", 0)
out = {"caching": os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING", "0") != "1"}

# Matrix products of several shapes, each checked against float64.
mm = []
for n in (64, 257, 1024, 2048):
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    c = a @ b
    ref = (a.double() @ b.double())
    mm.append({"n": n, "sum": float(c.double().sum().item()),
               "max_err": float((c.double() - ref).abs().max().item())})
    del a, b, c, ref
out["matmul"] = mm

# A few training steps of a small MLP.
model = torch.nn.Sequential(
    torch.nn.Linear(512, 2048), torch.nn.GELU(),
    torch.nn.Linear(2048, 2048), torch.nn.GELU(),
    torch.nn.Linear(2048, 10)).to(dev)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x = torch.randn(4096, 512, device=dev)
y = torch.randint(0, 10, (4096,), device=dev)
losses = []
for step in range(8):
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    losses.append(float(loss.item()))
out["losses"] = losses
out["param_sum"] = float(sum(p.double().sum().item() for p in model.parameters()))
torch.cuda.synchronize()
out["max_allocated"] = torch.cuda.max_memory_allocated()
out["max_reserved"] = torch.cuda.max_memory_reserved()
print(json.dumps(out))
