"""Milliseconds per Langevin step and per train step in the MNIST image setting, ebmdual vs PyTorch.

    python -m benchmarks.image_step                      (pip install -e '.[bench]' for torch)
    python -m benchmarks.image_step --repeats=3 --compile=0 --loops=host --threads=1

Setting: `ConvEnergy(features=(16, 32, 64, 64))` (3×3 conv to 16 channels, then 4×4
stride-2 convs 28 → 14 → 7 → 4, swish, Dense(1)) on 28×28×1 images in [0, 1]; batch
B = 128; K = 60 ULA steps per train step, x ← clip(x − h∇E + √(2hT)ξ, 0, 1) (with
`--grad_clamp` c, ∇E clipped to [−c, c] per pixel first); a replay buffer of N = 10^4
particles of which B move per step (restart probability 0.05 at random batch items);
then one Adam step on the maximum-likelihood loss mean E(batch) − mean E(particles).
Data: the MNIST test images at --data_path (`ebmdual.data.mnist.load_mnist(...,
as_uint8=True)`), or random uint8 images with --data=random (timing does not depend on
the pixels).

Rows (each the median of timed calls after one warm-up call that compiles):
1. ∇ₓE of B images: `ebmdual.compiler.jit` (jax.jit with ebmdual's compiler options, the
   way every ebmdual program is compiled) of the vmapped gradient (`samplers.energy_gradients`);
   PyTorch eager, `torch.autograd.grad` of E(x).sum() w.r.t. x.
2. One Langevin step on 128 particles: `jit(samplers.ula(...).transition)`, its output
   fed back as the next input; PyTorch eager (`torch_image_peer.langevin_step`);
   with --compile=1 (the default; 0 skips it) the same step through `torch.compile`
   (∇E by torch.func.grad, so forward and backward are one graph; its first call
   compiles, about 20 s on 2 cores, less when inductor's on-disk cache already holds it).
   Under it, the step's noise alone: `samplers.gaussian_noise` (threefry normals) against
   `torch.randn_like`.
2b. K ULA steps on the B images, interleaved rounds: `ula(noise_ahead=True).step` (the
   image configs' choice), which draws the normals of `samplers.noise_chunk` steps ahead
   of the loop that uses them, against the same K transitions with each step's normals
   drawn inside the loop body (ula's default form); the two must give the same floats,
   or the run stops.
3. A full train step (K = 60): ebmdual `make_trainer(..., streamed=True, batch_size=B,
   preprocess=uint8 → float32 / 255 on the device, particles_per_step=B)` with
   `sampler_loop='host'` (K jitted transitions dispatched from Python) and with
   `sampler_loop='scan'` (the whole step one compiled lax.scan), each call
   `train_loop(state, trainer.put(chunk))` on a chunk (S, B, 28, 28, 1) uint8 of
   S = --train_steps batches, put on the device once before timing; PyTorch eager as a
   PyTorch user writes it (`torch_image_peer.TorchTrainer`: a buffer tensor, randperm
   index, restart, a Python loop of K steps with requires_grad_ / autograd.grad / clamp,
   the rows written back, Adam); with --compile=1 the same loop on the compiled step.
   ms per Langevin step = train step ms / K. ebmdual's step also computes its metrics
   (one more forward pass on batch and particles), which the torch step does not.

Timing: wall clock (`time.perf_counter`), JAX calls ended by `jax.block_until_ready`
(torch on the CPU is synchronous). Rows 1–2 take the median of --micro_repeats calls;
the train-step rows --repeats calls of S train steps, the host, scan and eager torch
calls interleaved round by round so that they see the same machine load. torch.compile
rows run last (compile's worker processes would inflate a following eager timing);
their first-call column is the compile time. Threads: --threads (default all cores)
restricts the process to that many cores (CPU affinity, before JAX starts, so XLA's
thread pool is that size) and sets torch.set_num_threads to it: the same for both.

Check (--check=1, the default): the flax parameters are copied into the torch module
(`torch_image_peer.load_flax_params`) and the energies and ∇ₓE of 8 images, and one
noise-free Langevin step (T = 0, through the clip and the clamp), must agree to 1e-4
relative to the largest value, or the run stops before timing.

The last column is ms ÷ PyTorch eager ms of the same row (below 1: faster than eager
PyTorch). The 'paired ratio' rows divide the two programs' times round by round and take
the median: on a machine whose load drifts (shared cores), that is steadier than the ratio
of the two medians. A default run takes about 5 minutes on 2 idle CPU cores; other processes on
the same cores inflate every row (the load average is printed at the start and end).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

FEATURES = (16, 32, 64, 64)
IMAGE_SHAPE = (28, 28, 1)
LOOPS = ("host", "scan")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128, help="B: batch and particles moved per step")
    parser.add_argument("--steps", type=int, default=60, help="K: Langevin steps per train step")
    parser.add_argument("--particles", type=int, default=10_000, help="N: replay-buffer size")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed train-step calls per program after the warm-up")
    parser.add_argument("--train_steps", type=int, default=3,
                        help="S: train steps per timed call (the streamed chunk's length)")
    parser.add_argument("--micro_repeats", type=int, default=20,
                        help="timed calls of the ∇E and Langevin-step rows")
    parser.add_argument("--torch", type=int, choices=(0, 1), default=1,
                        help="time the PyTorch peer (1) or not (0)")
    parser.add_argument("--compile", type=int, choices=(0, 1), default=1,
                        help="also time torch.compile of the Langevin step (1; 0: skip)")
    parser.add_argument("--threads", type=int, default=None,
                        help="cores for both JAX (CPU affinity) and torch (set_num_threads); "
                             "default all")
    parser.add_argument("--loops", default="host,scan", help="comma list of ebmdual sampler "
                        "loops to time: host, scan")
    parser.add_argument("--check", type=int, choices=(0, 1), default=1,
                        help="check that the torch network is the same function (1)")
    parser.add_argument("--data", choices=("mnist", "random"), default="mnist",
                        help="MNIST test images (falls back to random if absent) or random uint8")
    parser.add_argument("--data_path", default="/work/shared/data/mnist")
    parser.add_argument("--step_size", type=float, default=0.01, help="h")
    parser.add_argument("--temperature", type=float, default=1e-3, help="T")
    parser.add_argument("--grad_clamp", type=float, default=0.0,
                        help="per-pixel clamp of ∇E in the sampler; 0: none")
    parser.add_argument("--restart_prob", type=float, default=0.05)
    parser.add_argument("--learning_rate", type=float, default=1e-4, help="Adam")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.loops = [l.strip() for l in args.loops.split(",") if l.strip()]
    if set(args.loops) - set(LOOPS):
        parser.error(f"--loops: expected a comma list of {LOOPS}")
    if args.particles < args.batch:
        parser.error("--particles must be at least --batch")
    return args


def limit_threads(threads: int | None) -> int:
    """Restrict this process to `threads` cores (before XLA's CPU client starts): -> cores."""
    cores = sorted(os.sched_getaffinity(0))
    if threads is not None and 0 < threads < len(cores):
        os.sched_setaffinity(0, cores[:threads])
        cores = cores[:threads]
    return len(cores)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_images(args) -> tuple[np.ndarray, str]:
    """(images (n, 28, 28, 1) uint8, description)."""
    if args.data == "mnist":
        from ebmdual.data.mnist import DatasetError, load_mnist
        try:
            images, _ = load_mnist(args.data_path, as_uint8=True)
            return images.reshape(-1, *IMAGE_SHAPE), f"MNIST test images ({args.data_path})"
        except DatasetError as e:
            print(f"  MNIST not readable ({e}); random uint8 images instead")
    rng = np.random.default_rng(args.seed)
    return rng.integers(0, 256, (10_000, *IMAGE_SHAPE), dtype=np.uint8), "random uint8 images"


# ----------------------------------------------------------------------------- timing

def time_calls(call, repeats: int) -> tuple[float, float]:
    """(median ms of `repeats` calls, seconds of the warm-up call); `call()` blocks."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), first


def time_interleaved(calls: dict, repeats: int, per_call: int) -> tuple[dict, dict]:
    """({name: (median ms per unit, warm-up s)}, {name: [ms per unit, one per round]}) for
    blocking calls timed round by round; each call does `per_call` units of work."""
    first, times = {}, {name: [] for name in calls}
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        first[name] = time.perf_counter() - start
        print(f"  warm-up {name}: {first[name]:.1f} s", flush=True)
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(1e3 * (time.perf_counter() - start) / per_call)
    return {name: (statistics.median(times[name]), first[name]) for name in calls}, times


def paired_ratio(times: dict, name: str, peer: str) -> float:
    """Median over rounds of (ms of `name` ÷ ms of `peer` in the same round): steadier than
    the ratio of medians when the machine's load drifts between rounds."""
    return statistics.median(a / b for a, b in zip(times[name], times[peer]))


# ----------------------------------------------------------------------------- ebmdual

def preprocess(key, batch):
    """uint8 pixels -> float32 in [0, 1], on the device (no dequantisation)."""
    del key
    import jax.numpy as jnp
    return batch.astype(jnp.float32) / 255.0


def make_sampler(energy_fn, args):
    from ebmdual import samplers
    return samplers.ula(energy_fn, num_steps=args.steps, clip=(0.0, 1.0),
                        grad_clamp=args.grad_clamp or None, noise_ahead=True)


def jax_micro(energy, params, images, args) -> dict:
    """Rows 1-2, ebmdual: {'grad': (ms, first s), 'step': (ms, first s)}."""
    import jax
    from ebmdual import samplers
    from ebmdual.compiler import jit

    x = jax.device_put(images)
    grad = jit(lambda p, x: samplers.energy_gradients(energy.energy_fn, p, x))
    transition = jit(make_sampler(energy.energy_fn, args).transition)
    hparams = {"particle_step_size": np.float32(args.step_size),
               "temperature": np.float32(args.temperature)}
    key = jax.random.key(args.seed)
    state = {"x": x, "t": 0}

    def step():
        state["t"] += 1
        state["x"], _, info = transition(jax.random.fold_in(key, state["t"]), params,
                                         state["x"], (), hparams)
        jax.block_until_ready(state["x"])

    noise = jit(lambda k: samplers.gaussian_noise(k, x, False))
    return {"grad": time_calls(lambda: jax.block_until_ready(grad(params, x)),
                               args.micro_repeats),
            "step": time_calls(step, args.micro_repeats),
            "noise": time_calls(lambda: jax.block_until_ready(noise(key)), args.micro_repeats)}


def jax_chain_calls(energy, params, images, args) -> dict:
    """Row 2b: {name: blocking call of K ULA steps on the B images}: `ula.step` with
    noise_ahead=True (normals drawn ahead, `samplers.noise_chunk` steps at a time) and the
    same K transitions with each step's normals drawn inside the loop body
    (`samplers.repeat_transition` of its `transition`, which is ula's default step but for
    the optimization barrier that makes the two forms give the same floats, checked)."""
    import jax
    from ebmdual import samplers
    from ebmdual.compiler import jit

    sampler = make_sampler(energy.energy_fn, args)
    hparams = {"particle_step_size": np.float32(args.step_size),
               "temperature": np.float32(args.temperature)}
    forms = {"ahead": sampler.step,
             "in loop": samplers.repeat_transition(sampler.transition, args.steps)}
    x, key = jax.device_put(images), jax.random.key(args.seed)
    programs = {name: jit(lambda k, p, x, step=step: step(k, p, x, (), hparams)[0])
                for name, step in forms.items()}
    moved = {name: np.asarray(f(key, params, x)) for name, f in programs.items()}
    if not np.array_equal(moved["ahead"], moved["in loop"]):
        raise AssertionError("ula.step and its transitions in a loop differ")
    return {f"chain {name}": (lambda f=f: jax.block_until_ready(f(key, params, x)))
            for name, f in programs.items()}


def jax_train_calls(energy, chunk, args) -> tuple[dict, dict]:
    """({loop: blocking call of S train steps}, {loop: initial params}) for each of args.loops."""
    import jax
    import optax
    from ebmdual import objectives
    from ebmdual.train import RestartPolicy, make_trainer

    calls, params = {}, {}
    for loop in args.loops:
        trainer = make_trainer(
            energy, objectives.maximum_likelihood(energy.energy_fn),
            optax.adam(args.learning_rate), data=chunk[0], streamed=True,
            batch_size=args.batch, preprocess=preprocess,
            sampler=make_sampler(energy.energy_fn, args),
            restart=RestartPolicy(prob=args.restart_prob), num_particles=args.particles,
            particles_per_step=args.batch, particle_step_size=args.step_size,
            temperature=args.temperature, sampler_loop=loop)
        state = trainer.init(jax.random.key(args.seed), trainer.put_batch(chunk[0]))
        params[loop] = jax.tree.map(np.asarray, state.params)
        placed = trainer.put(chunk)
        holder = {"state": state}

        def call(trainer=trainer, placed=placed, holder=holder):
            holder["state"], metrics = trainer.train_loop(holder["state"], placed)
            jax.block_until_ready((holder["state"], metrics))
            if not bool(np.all(np.asarray(metrics["finite"]) == 1)):
                raise FloatingPointError("ebmdual train step: non-finite values")

        calls[f"ebmdual {loop}"] = call
    return calls, params


# ----------------------------------------------------------------------------- torch

def check_equivalence(energy, params, images, args) -> dict:
    """Max |Δ| / max |reference| of E, ∇ₓE and one T = 0 Langevin step, flax vs torch, on
    `images` (n, 28, 28, 1) float32. Raises AssertionError above 1e-4."""
    import jax
    import jax.numpy as jnp
    import torch
    from benchmarks import torch_image_peer as peer
    from ebmdual import samplers

    net = peer.load_flax_params(peer.TorchConvEnergy(FEATURES), params)
    x = jnp.asarray(images)
    e_jax = np.asarray(jax.vmap(lambda xi: energy.energy_fn(params, xi))(x))
    g_jax = np.asarray(samplers.energy_gradients(energy.energy_fn, params, x))
    hparams = {"particle_step_size": jnp.float32(args.step_size), "temperature": jnp.float32(0.0)}
    moved_jax, _, _ = make_sampler(energy.energy_fn, args).transition(
        jax.random.key(0), params, x, (), hparams)
    moved_jax = np.asarray(moved_jax)

    xt = peer.nhwc_to_nchw(images)
    with torch.no_grad():
        e_torch = net(xt).numpy()
    g_torch = peer.energy_gradient(net, xt).permute(0, 2, 3, 1).numpy()
    moved_torch = peer.langevin_step(net, xt, args.step_size, 0.0, args.grad_clamp or None,
                                     noise=torch.zeros_like(xt)).permute(0, 2, 3, 1).numpy()
    errors = {}
    for name, a, b in (("energy", e_jax, e_torch), ("grad", g_jax, g_torch),
                       ("step (T = 0)", moved_jax, moved_torch)):
        errors[name] = (float(np.max(np.abs(a - b))),
                        float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12)))
    bad = {k: v for k, v in errors.items() if not v[1] <= 1e-4}
    assert not bad, f"torch network differs from ConvEnergy: {bad} (max |Δ|, relative)"
    return errors


def torch_micro(params, images, args, compile_step: bool) -> dict:
    """Rows 1-2, torch: {'grad': ..., 'step': ...} eager, or {'step compiled': ...}."""
    import torch
    from benchmarks import torch_image_peer as peer

    torch.manual_seed(args.seed)
    net = peer.load_flax_params(peer.TorchConvEnergy(FEATURES), params)
    x = peer.nhwc_to_nchw(images)
    state = {"x": x}
    if compile_step:
        step_fn = peer.compiled_langevin_step(net, args.step_size, args.temperature,
                                              args.grad_clamp or None)

        def step():
            state["x"] = step_fn(state["x"])

        return {"step compiled": time_calls(step, args.micro_repeats)}

    def step():
        state["x"] = peer.langevin_step(net, state["x"], args.step_size, args.temperature,
                                        args.grad_clamp or None)

    return {"grad": time_calls(lambda: peer.energy_gradient(net, x), args.micro_repeats),
            "step": time_calls(step, args.micro_repeats),
            "noise": time_calls(lambda: torch.randn_like(x), args.micro_repeats)}


def torch_train_call(params, chunk, images, args, compile_step: bool):
    """A blocking call of S torch train steps on the chunk (S, B, 28, 28, 1) uint8."""
    import torch
    from benchmarks import torch_image_peer as peer

    torch.manual_seed(args.seed)
    net = peer.load_flax_params(peer.TorchConvEnergy(FEATURES), params)
    step_fn = (peer.compiled_langevin_step(net, args.step_size, args.temperature,
                                           args.grad_clamp or None) if compile_step else None)
    trainer = peer.TorchTrainer(
        net, peer.nhwc_to_nchw(images), args.particles, args.batch, args.steps,
        args.step_size, args.temperature, args.restart_prob, args.learning_rate,
        args.grad_clamp or None, step_fn=step_fn)
    batches = [peer.nhwc_to_nchw(batch) for batch in chunk]

    def call():
        for batch in batches:
            loss = trainer.train_step(batch)
        if not bool(torch.isfinite(loss)) or not bool(torch.isfinite(trainer.buffer).all()):
            raise FloatingPointError("torch train step: non-finite values")

    return call


# ----------------------------------------------------------------------------- main

def markdown_table(header, rows) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(header), "| " + " | ".join("-" * w for w in widths) + " |",
                      *(line(r) for r in rows)])


def main(argv=None):
    args = parse_args(argv)
    cores = limit_threads(args.threads)  # before anything starts XLA's CPU client
    import jax

    from ebmdual.energies import ConvEnergy, as_energy

    use_torch = bool(args.torch)
    torch = None
    if use_torch:
        try:
            import torch
            torch.set_num_threads(cores)
        except ImportError:
            print("torch is not installed (pip install -e '.[bench]'): ebmdual rows only")
            use_torch = False
    load_start = os.getloadavg()[0]
    machine = (f"jax {jax.__version__} ({jax.default_backend()}), "
               + (f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
                  if use_torch else "")
               + f"{cores} of {os.cpu_count()} cores ({cpu_model()}), "
               f"python {platform.python_version()}")
    print(machine)

    images_u8, data_name = load_images(args)
    rng = np.random.default_rng(args.seed)
    chunk = images_u8[rng.integers(0, len(images_u8), (args.train_steps, args.batch))]
    micro_images = images_u8[rng.integers(0, len(images_u8), args.batch)].astype(np.float32) / 255
    energy = as_energy(ConvEnergy(features=FEATURES))
    params = energy.init(jax.random.key(args.seed), micro_images[0])
    print(f"ConvEnergy{FEATURES}, {data_name}; B = {args.batch}, K = {args.steps}, "
          f"N = {args.particles}, h = {args.step_size}, T = {args.temperature}, "
          f"grad clamp {args.grad_clamp or 'none'}, restart p = {args.restart_prob}, "
          f"Adam {args.learning_rate}")

    if use_torch and args.check:
        # a few images in [0, 1], some pixels clipped by the T = 0 step; perturbed parameters
        check_images = np.concatenate([micro_images[:4], rng.uniform(0, 1, (4, *IMAGE_SHAPE))
                                       .astype(np.float32)])
        check_params = jax.tree.map(
            lambda p: p * (1.0 + 0.5 * np.asarray(jax.random.normal(jax.random.key(7), p.shape))),
            params)
        errors = check_equivalence(energy, check_params, check_images, args)
        print("check (flax vs torch, 8 images, max |Δ| / max |flax|): "
              + ", ".join(f"{k} {v[1]:.1e} (abs {v[0]:.1e})" for k, v in errors.items()))

    results = {}  # row key -> (ms, first s)
    print("timing ∇E and one Langevin step ...", flush=True)
    jm = jax_micro(energy, params, micro_images, args)
    results.update({f"{row} ebmdual": jm[row] for row in ("grad", "step", "noise")})
    if use_torch:
        tm = torch_micro(params, micro_images, args, compile_step=False)
        results.update({f"{row} torch": tm[row] for row in ("grad", "step", "noise")})

    print(f"timing K = {args.steps} ULA steps, normals drawn ahead and in the loop "
          f"({args.repeats} interleaved rounds) ...", flush=True)
    chain, chain_rounds = time_interleaved(jax_chain_calls(energy, params, micro_images, args),
                                           args.repeats, args.steps)

    print(f"timing train steps ({args.repeats} interleaved calls of S = {args.train_steps} "
          "steps after a warm-up each) ...", flush=True)
    calls, train_params = jax_train_calls(energy, chunk, args)
    if use_torch:
        first_params = next(iter(train_params.values()))
        calls["torch eager"] = torch_train_call(first_params, chunk, images_u8, args, False)
    train, train_rounds = time_interleaved(calls, args.repeats, args.train_steps)

    compile_error = None
    if use_torch and args.compile:
        print("torch.compile: the Langevin step, then the train loop on it ...", flush=True)
        try:
            results["step torch compiled"] = torch_micro(params, micro_images, args,
                                                         compile_step=True)["step compiled"]
            call = torch_train_call(next(iter(train_params.values())), chunk, images_u8, args,
                                    True)
            train.update(time_interleaved({"torch compiled": call}, args.repeats,
                                          args.train_steps)[0])
        except Exception as e:  # noqa: BLE001 (inductor needs a C++ compiler, ...)
            lines = [l for l in str(e).splitlines() if l.strip()]
            compile_error = f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]

    def ratio(ms, peer_key):
        return f"{ms / results[peer_key][0]:.2f}" if peer_key in results else ""

    rows = []
    ms, first = results["grad ebmdual"]
    rows.append((f"1. ∇ₓE, {args.batch} images", "ebmdual jit(vmap(grad))", f"{ms:.1f}", "",
                 ratio(ms, "grad torch"), f"{first:.1f}"))
    if "grad torch" in results:
        ms, first = results["grad torch"]
        rows.append(("", "PyTorch eager autograd.grad", f"{ms:.1f}", "", "1.00", f"{first:.1f}"))
    for key, label in (("step ebmdual", "ebmdual jit(ula.transition)"),
                       ("step torch", "PyTorch eager"),
                       ("step torch compiled", "PyTorch torch.compile")):
        if key in results:
            ms, first = results[key]
            rows.append(("2. one Langevin step" if key == "step ebmdual" else "", label,
                         f"{ms:.1f}", f"{ms:.1f}", ratio(ms, "step torch"), f"{first:.1f}"))
    ms, first = results["noise ebmdual"]
    rows.append((f"   its noise, {args.batch} × {int(np.prod(IMAGE_SHAPE))} normals",
                 "ebmdual jit(gaussian_noise)", f"{ms:.2f}", "", ratio(ms, "noise torch"),
                 f"{first:.1f}"))
    if "noise torch" in results:
        ms, first = results["noise torch"]
        rows.append(("", "PyTorch randn_like", f"{ms:.2f}", "", "1.00", f"{first:.1f}"))
    for name, label in (("chain ahead", "ebmdual ula.step (normals drawn ahead)"),
                        ("chain in loop", "the same, normals drawn in the loop body")):
        ms, first = chain[name]
        rows.append((f"2b. K = {args.steps} ULA steps" if name == "chain ahead" else "", label,
                     f"{ms * args.steps:.0f}", f"{ms:.2f}", "", f"{first:.1f}"))
    rows.append(("", "paired ratio ahead ÷ in loop", "", "",
                 f"{paired_ratio(chain_rounds, 'chain ahead', 'chain in loop'):.3f}", ""))
    labels = {"ebmdual host": "ebmdual sampler_loop='host'",
              "ebmdual scan": "ebmdual sampler_loop='scan'",
              "torch eager": "PyTorch eager", "torch compiled": "PyTorch, torch.compile'd step"}
    eager = train.get("torch eager")
    for i, (name, (ms, first)) in enumerate(train.items()):
        rows.append((f"3. train step, K = {args.steps}" if i == 0 else "", labels[name],
                     f"{ms:.0f}", f"{ms / args.steps:.1f}",
                     f"{ms / eager[0]:.2f}" if eager else "", f"{first:.1f}"))
    if eager:
        for name in ("ebmdual host", "ebmdual scan"):
            if name in train_rounds:
                rows.append(("", f"paired ratio {labels[name].split()[1]} ÷ PyTorch eager", "",
                             "", f"{paired_ratio(train_rounds, name, 'torch eager'):.3f}", ""))
    print()
    print(markdown_table(("row", "program", "ms", "ms / Langevin step",
                          "× PyTorch eager", "1st call s"), rows))
    print(f"\n{machine}")
    print(f"B = {args.batch}, K = {args.steps}, N = {args.particles}; rows 1-2: median of "
          f"{args.micro_repeats} calls; row 2b: median of {args.repeats} interleaved rounds "
          f"of K steps; row 3: median of {args.repeats} calls of "
          f"S = {args.train_steps} train steps, per train step; '× PyTorch eager' = ms ÷ "
          "PyTorch eager ms of the same row; 'paired ratio': the median over rounds of the "
          "two programs' ratio in the same round; 1st call s: the warm-up call (compilation), "
          f"for row 3 S steps. Load average {load_start:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end on {os.cpu_count()} host CPUs.")
    if use_torch and not args.compile:
        print("torch.compile not timed (--compile=1 to time it)")
    if compile_error:
        print(f"torch.compile failed: {compile_error}")


if __name__ == "__main__":
    main()
