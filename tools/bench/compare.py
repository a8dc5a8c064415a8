#!/usr/bin/python3
"""psgd beside PyTorch on the same networks, batches and optimizer, in one run on one machine.

For each network and batch: training images/s (forward, cross-entropy, backward and the SGD
update with the PSG scaling of W4 quantizers, warm-up excluded, median of the timed steps),
inference images/s of the float (FP) and quantized (LP) network, and peak GPU memory during
training. Synthetic data already on the device on both sides.

PyTorch variants, with our thread count on the CPU: eager, eager with channels_last,
torch.compile (mode max-autotune; absent before PyTorch 2), and on a GPU the whole step, and
for inference the whole forward, captured in a CUDA graph. Both sides must quantize the same
tensors (psgd-bench names its own). With --rounds R, psgd and the PyTorch variants run in turn
R times and each figure is the median over the rounds, so that a change in the machine's load
falls on both sides. TF32 is allowed on both sides (ours by default, PyTorch's by its
switches). With --precision bf16, psgd runs its bf16 mode and every PyTorch variant runs under
autocast to bfloat16 (AMP; float32 weights and optimizer on both sides). The table is printed
last and written as results.json and results.md in --out, with the ratios psgd / PyTorch
(above 1: psgd faster, or for memory: psgd uses more), and a second table sets psgd against
PyTorch's fastest variant for each figure."""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import reference_models  # noqa: E402

LR, MOMENTUM, WEIGHT_DECAY, LAMBDA_S, W_BITS = 0.01, 0.9, 1e-4, 150.0, 4


class PsgSgd(torch.optim.Optimizer):
    """The reference's training update in tensor operations only (no host synchronisation, so
    that a CUDA graph can capture it): running ranges of each quantized weight, the PSG scale
    lambda_s * |w - Q(w)| on its gradient, then SGD with momentum and L2 weight decay."""

    def __init__(self, params, quantized):
        super().__init__(params, dict(lr=LR))
        self.quantized = quantized  # parameters with a W_BITS quantizer
        self.levels = 2 ** (W_BITS - 1) - 1
        self.ranges = {id(p): torch.zeros(2, device=p.device) for p in quantized}
        self.momentum = {}

    @torch.no_grad()
    def step(self):
        first = not self.momentum
        for p in self.quantized:
            r = self.ranges[id(p)]
            now = torch.stack([p.min().clamp(max=0), p.max().clamp(min=0)])
            r.copy_(now if first else 0.1 * now + 0.9 * r)
            delta = torch.maximum(r[0].abs(), r[1]) / self.levels
            q = delta * torch.round(torch.clamp(p / delta, -self.levels, self.levels))
            p.grad.mul_(LAMBDA_S * (p - q).abs())
        for group in self.param_groups:
            for p in group["params"]:
                d = p.grad.add(p, alpha=WEIGHT_DECAY)
                buf = self.momentum.get(id(p))
                if buf is None:
                    self.momentum[id(p)] = buf = d.clone()
                else:
                    buf.mul_(MOMENTUM).add_(d)
                p.add_(buf, alpha=-group["lr"])


def ceilings(device, warmup, repeats, dtype):
    """The machine's measured ceilings: copy bandwidth of a large tensor (read + write; 1 GiB on
    a GPU, 256 MiB on the CPU) and the throughput of a large matrix product of `dtype` (8192^3
    with TF32 allowed on a GPU, 2048^3 on the CPU with the benchmark's threads)."""
    floats, n = (2**28, 8192) if device == "cuda" else (2**26, 2048)
    a = torch.empty(floats, device=device)
    b = torch.empty_like(a)
    copy_ms = median_ms(device, warmup, repeats, lambda: b.copy_(a))
    del a, b
    x, y = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    matmul_ms = median_ms(device, warmup, repeats, lambda: x @ y)
    return {"copy_gb_per_s": 2 * floats * 4 / (copy_ms / 1000) / 1e9,
            "matmul_gflop_per_s": 2 * n**3 / (matmul_ms / 1000) / 1e9, "matmul_dtype": str(dtype).split(".")[1]}


def training_gflop_per_image(arch, classes):
    """FLOPs of one image's training step in its convolutions and linear layers: twice the
    multiply-adds of the forward pass, times three (forward, data gradient, filter gradient)."""
    model = reference_models.build(arch, classes).eval()
    macs = 0

    def count(module, inputs, output):
        nonlocal macs
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            macs += output.numel() * module.in_channels // module.groups * kh * kw
        else:
            macs += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    return 6 * macs / 1e9


def quantized_names(model):
    """REFERENCE.md with first/last quantization: every conv weight, and every linear layer's
    weight and bias (ResNet's fc; VGG's two hidden classifier layers and its last)."""
    return [n for n, p in model.named_parameters() if p.dim() == 4 or n.startswith(("fc.", "classifier."))]


def quantized_parameters(model):
    names = set(quantized_names(model))
    return [p for n, p in model.named_parameters() if n in names]


def check_same_quantizers(arch, mine, classes):
    """Both sides must scale and quantize the same tensors, or they do different work."""
    theirs = quantized_names(benchmark_model(arch, classes))
    if "quantized_tensors" not in mine:
        sys.exit("compare: this psgd-bench does not name its quantized tensors; rebuild it")
    if sorted(mine["quantized_tensors"]) != sorted(theirs):
        only_psgd = sorted(set(mine["quantized_tensors"]) - set(theirs))
        only_pytorch = sorted(set(theirs) - set(mine["quantized_tensors"]))
        sys.exit(f"compare: {arch}: psgd and the PyTorch optimizer quantize different tensors "
                 f"(only psgd: {only_psgd}; only PyTorch: {only_pytorch})")


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def median_ms(device, warmup, repeats, work):
    times = []
    for i in range(warmup + repeats):
        synchronize(device)
        start = time.perf_counter()
        work()
        synchronize(device)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def benchmark_model(arch, classes):
    """The reference network with its dropout drawing its own masks (the parity tests' dropout
    takes them from outside)."""
    model = reference_models.build(arch, classes)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, reference_models.MaskedDropout):
                setattr(module, child_name, torch.nn.Dropout(child.p))
    return model


def captured(work):
    """work captured in a CUDA graph, as PyTorch documents whole-network capture: three warm-up
    runs on a side stream, then the capture; returns the graph's replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            work()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        work()
    return graph.replay


def pytorch_variant(variant, arch, classes, batch, device, warmup, repeats, bf16, compile_mode):
    torch.manual_seed(0)
    # A captured graph cannot reuse autocast's cache of weight casts across replays.
    amp = lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=bf16,  # noqa: E731
                                 cache_enabled=variant != "cuda_graph")
    model = benchmark_model(arch, classes).to(device).train()
    memory_format = torch.channels_last if variant == "channels_last" else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    images = (torch.rand(batch, 3, 32, 32, device=device) * 2 - 1).to(memory_format=memory_format)
    labels = torch.arange(batch, device=device) % classes
    optimizer = PsgSgd(model.parameters(), quantized_parameters(model))
    forward = torch.compile(model, mode=compile_mode) if variant == "compile" else model
    # The CUDA graph variant replays the whole step, and later the whole forward.
    graphed = captured if variant == "cuda_graph" else lambda work: work

    def step():
        # Gradients set to None: backward assigns fresh ones (in a graph, from its own pool)
        # rather than adding to the last step's.
        for p in model.parameters():
            p.grad = None
        with amp():
            loss = F.cross_entropy(forward(images), labels)
        loss.backward()
        optimizer.step()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train = median_ms(device, warmup, repeats, graphed(step))
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0

    model.eval()

    def infer():
        with torch.no_grad(), amp():
            forward(images)

    infer_graph = graphed(infer)  # on a GPU replays the network's forward with its present weights
    infer_fp = median_ms(device, warmup, repeats, infer_graph)
    with torch.no_grad():
        levels = 2 ** (W_BITS - 1) - 1
        for p in quantized_parameters(model):  # in place, so that the graph reads them too
            delta = torch.maximum(p.min().clamp(max=0).abs(), p.max().clamp(min=0)) / levels
            p.copy_(delta * torch.round(torch.clamp(p / delta, -levels, levels)))
    infer_lp = median_ms(device, warmup, repeats, infer_graph)
    per_s = lambda ms: 1000.0 * batch / ms  # noqa: E731
    return {"train_ms": train, "train_images_per_s": per_s(train), "infer_fp_images_per_s": per_s(infer_fp),
            "infer_lp_images_per_s": per_s(infer_lp), "peak_device_mib": peak}


def ours(bench, arch, classes, batch, device, threads, warmup, repeats, bf16):
    r = subprocess.run([bench, "--arch", arch, "--classes", str(classes), "--batch", str(batch), "--device", device,
                        "--threads", str(threads), "--warmup", str(warmup), "--repeats", str(repeats)]
                       + (["--bf16"] if bf16 else []), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"compare: {bench} failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "CPU"


ALL_VARIANTS = ["eager", "channels_last", "compile", "cuda_graph"]


def variants(device, wanted):
    """The wanted variants this PyTorch runs here: torch.compile from PyTorch 2 on, CUDA graphs
    on a GPU only."""
    return [v for v in wanted
            if (v != "compile" or hasattr(torch, "compile")) and (v != "cuda_graph" or device == "cuda")]


def median_of_rounds(results):
    """One side's figures over the rounds: the median of each, and the training rate of every
    round (its spread shows the machine's noise)."""
    combined = dict(results[0])
    for key, value in results[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            combined[key] = statistics.median(r[key] for r in results)
    combined["train_images_per_s_rounds"] = [r["train_images_per_s"] for r in results]
    return combined


def fastest(rows, key):
    """The row whose PyTorch variant has the highest `key`."""
    return max(rows, key=lambda r: r["pytorch"][key])


def markdown(rows, header, limits):
    lines = [header, "",
             f"Ceilings: copy {limits['copy_gb_per_s']:.1f} GB/s, {limits['matmul_dtype']} matrix product "
             f"{limits['matmul_gflop_per_s']:.0f} GFLOP/s. psgd's training rate in GFLOP/s counts the "
             "convolutions' and linear layers' FLOPs (3 passes).", "",
             "| network | batch | PyTorch variant | train img/s (psgd / PyTorch) | ratio | FP infer ratio | "
             "LP infer ratio | peak MiB (psgd / PyTorch) | psgd training GFLOP/s (of the product's) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mem = (f"{r['psgd']['peak_device_mib']:.0f} / {r['pytorch']['peak_device_mib']:.0f}"
               if r["pytorch"]["peak_device_mib"] else "n/a")
        lines.append(f"| {r['arch']} | {r['batch']} | {r['variant']} | {r['psgd']['train_images_per_s']:.0f} / "
                     f"{r['pytorch']['train_images_per_s']:.0f} | {r['train_ratio']:.2f}x | {r['fp_ratio']:.2f}x | "
                     f"{r['lp_ratio']:.2f}x | {mem} | {r['train_gflop_per_s']:.0f} "
                     f"({r['train_gflop_per_s'] / limits['matmul_gflop_per_s']:.0%}) |")
    lines += ["", "Against PyTorch's fastest variant for each figure:", "",
              "| network | batch | train ratio | FP infer ratio | LP infer ratio |", "|---|---|---|---|---|"]
    cases = {}
    for r in rows:
        cases.setdefault((r["arch"], r["batch"]), []).append(r)
    for (arch, batch), case in cases.items():
        cells = [f"{best[ratio]:.2f}x ({best['variant']})"
                 for best, ratio in ((fastest(case, "train_images_per_s"), "train_ratio"),
                                     (fastest(case, "infer_fp_images_per_s"), "fp_ratio"),
                                     (fastest(case, "infer_lp_images_per_s"), "lp_ratio"))]
        lines.append(f"| {arch} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


class VariantTimeout(Exception):
    pass


def on_alarm(signum, frame):
    raise VariantTimeout("took longer than --variant-timeout")


def write_results(args, machine, commit, rows, limits):
    """Writes results.json and results.md; returns the Markdown table."""
    header = (f"{time.strftime('%Y-%m-%d')}, {machine}, PyTorch {torch.__version__}, psgd {commit}; "
              f"each figure the median of {args.rounds} round(s), psgd and PyTorch alternating, of the "
              f"median of {args.repeats} runs after {args.warmup} warm-up")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d"), "machine": machine, "torch": torch.__version__,
                   "commit": commit, "device": args.device, "ceilings": limits, "rows": rows}, f, indent=2)
    table = markdown(rows, header, limits)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    return table


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", default="build/tools/psgd-bench", help="path to psgd-bench")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--arch", nargs="+", default=["resnet32", "vgg16_bn"])
    parser.add_argument("--batch", nargs="+", type=int, default=[128, 512])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=positive_int, default=20, help="timed runs per figure and round")
    parser.add_argument("--rounds", type=positive_int, default=1,
                        help="rounds of psgd then each PyTorch variant; each figure is the median over them")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: psgd's bf16 mode against PyTorch under autocast to bfloat16")
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--variant-timeout", type=int, default=180,
                        help="seconds one PyTorch variant may take (torch.compile's autotuning included)")
    parser.add_argument("--variants", nargs="+", choices=ALL_VARIANTS, default=ALL_VARIANTS,
                        help="PyTorch variants (compile from PyTorch 2 on; cuda_graph on a GPU only)")
    parser.add_argument("--compile-mode", default="max-autotune",
                        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                        help="torch.compile's mode (max-autotune may autotune for minutes)")
    args = parser.parse_args()
    if not os.access(args.bench, os.X_OK):
        sys.exit(f"compare: {args.bench} not found; build first (scripts/build.sh)")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("compare: --device cuda but PyTorch sees no GPU")
    signal.signal(signal.SIGALRM, on_alarm)
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    machine = torch.cuda.get_device_name() if args.device == "cuda" else f"{cpu_name()}, {args.threads} threads"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    os.makedirs(args.out, exist_ok=True)
    bf16 = args.precision == "bf16"
    limits = ceilings(args.device, args.warmup, min(args.repeats, 10), torch.bfloat16 if bf16 else torch.float32)
    rows = []
    for arch in args.arch:
        for batch in args.batch:
            mine, theirs = [], {v: [] for v in variants(args.device, args.variants)}
            for round_ in range(args.rounds):
                print(f"round {round_ + 1}/{args.rounds}: psgd {arch} batch {batch} ...", file=sys.stderr, flush=True)
                mine.append(ours(args.bench, arch, args.classes, batch, args.device, args.threads, args.warmup,
                                 args.repeats, bf16))
                check_same_quantizers(arch, mine[-1], args.classes)
                for variant in [v for v in theirs if theirs[v] is not None]:
                    print(f"round {round_ + 1}/{args.rounds}: PyTorch {variant} {arch} batch {batch} ...",
                          file=sys.stderr, flush=True)
                    signal.alarm(args.variant_timeout)
                    try:
                        theirs[variant].append(pytorch_variant(variant, arch, args.classes, batch, args.device,
                                                               args.warmup, args.repeats, bf16, args.compile_mode))
                    except Exception as e:  # a variant this PyTorch cannot run is reported, not fatal
                        print(f"  {variant} failed: {e}", file=sys.stderr)
                        theirs[variant] = None
                    finally:
                        signal.alarm(0)
            ours_combined = median_of_rounds(mine)
            gflop_per_s = ours_combined["train_images_per_s"] * training_gflop_per_image(arch, args.classes)
            for variant, results in theirs.items():
                if not results:
                    continue
                pytorch = median_of_rounds(results)
                label = f"compile ({args.compile_mode})" if variant == "compile" else variant
                rows.append({"arch": arch, "batch": batch, "variant": label + ("+amp_bf16" if bf16 else ""),
                             "psgd": ours_combined, "pytorch": pytorch,
                             "train_ratio": ours_combined["train_images_per_s"] / pytorch["train_images_per_s"],
                             "fp_ratio": ours_combined["infer_fp_images_per_s"] / pytorch["infer_fp_images_per_s"],
                             "lp_ratio": ours_combined["infer_lp_images_per_s"] / pytorch["infer_lp_images_per_s"],
                             "train_gflop_per_s": gflop_per_s})
            write_results(args, machine, commit, rows, limits)  # what is measured survives an interruption
    print(write_results(args, machine, commit, rows, limits))


if __name__ == "__main__":
    main()
