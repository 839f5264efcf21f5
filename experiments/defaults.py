"""The full config tree shared by every task; task files override what differs.

Sections: data / model / optim / sampler / train / eval (score_sde style). Values
that studies sweep (train.restart_prob, sampler.step_size, sampler.temperature,
optim.*learning_rate, seed) become arrays of the compiled step, not constants.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = data = ml_collections.ConfigDict()
    data.name = "teacher"            # teacher | mixture | eight_gaussians | rings | checkerboard | mnist | celeb_a | imagenet32
    data.dim = 15
    data.num_train = 10_000
    data.num_test = 10_000
    data.batch_size = 0              # 0: full batch every step (resident data only)
    data.streamed = False            # True: the host streams chunks of batches (stored dtype)
    # teacher only: published (d = 3 bimodal, d = 15 old teacher) | orthogonal (θ1 = e1,
    # θ2 = e2) | random (two unit rows with cosine teacher_cosine from teacher_seed) |
    # explicit (the rows of teacher_theta); docs/tasks.md, Teacher.
    data.teacher = "published"
    # explicit teacher: a k × dim list of rows (normalised to unit norm). Typed `object`
    # (like optim.weight_cap) so that the command line takes a list as well as None.
    data.teacher_theta = ml_collections.FieldReference(None, field_type=object)
    data.teacher_cosine = 0.2        # random teacher: ⟨θ1, θ2⟩
    data.teacher_seed = 0            # random teacher: NumPy seed of the two rows
    data.mixture_weights = [0.5, 0.5]
    # mixture: a K × dim list of means (K = len(mixture_weights)); None: K modes on the
    # first axis, mixture_separation apart. Typed `object` for the command line.
    data.mixture_means = ml_collections.FieldReference(None, field_type=object)
    data.mixture_separation = 4.0    # mixture with mixture_means=None: distance between means
    # mixture: K per-mode stds; None: mixture_std for every mode. Typed `object`.
    data.mixture_stds = ml_collections.FieldReference(None, field_type=object)
    data.mixture_std = 0.5
    data.path = "../shared/data/mnist"   # mnist only: directory of the IDX files ('' : TFDS)
    # images through TFDS (celeb_a, imagenet32, mnist with path=''): the directory
    # prepared by `python -m experiments.prepare_data` (ArrayRecord); None: TFDS's default
    data.data_dir = ml_collections.config_dict.placeholder(str)
    data.image_size = 32             # celeb_a: centre crop resized to 32 or 64
    data.data_range = (0.0, 1.0)     # images: pixels scaled to [low, high]
    data.dequantize = True           # images: add U[0, 1) to the 8-bit values before scaling

    config.model = model = ml_collections.ConfigDict()
    model.name = "shallow"           # shallow | mlp | conv
    model.regime = "active"          # active (feature learning) | lazy (θ frozen)
    model.num_neurons = 64
    model.num_positive = 32          # neurons with output sign +1; the others have −1
    model.alpha = 1.0                # activation relu(u)^alpha
    model.init_weight = 1.0
    model.hidden_sizes = (128, 128)  # mlp only
    # mlp only: E += |x|²/(2 s²) with a zero-initialised output layer, so the initial model
    # is exactly N(0, s² I) (Jarzynski walkers must start as its samples); None: no base
    model.base_std = ml_collections.config_dict.placeholder(float)

    model.conv_features = (16, 32, 64, 64)  # conv: channels of the 3×3 layer, then of each stride-2 4×4 layer
    model.spectral_norm = False      # conv: spectral normalisation of every layer
    model.power_iterations = 3       # conv with spectral_norm: power-iteration steps per call

    config.optim = optim = ml_collections.ConfigDict()
    optim.name = "wfr"               # wfr (shallow only) | adam | sgd
    optim.learning_rate = 1e-3       # adam / sgd
    optim.feature_learning_rate = 0.2   # wfr: h_θ
    optim.weight_learning_rate = 0.2    # wfr: h_w
    # wfr: β, cap on mean(w); None: no cap. Typed `object` so that the command line takes
    # --config.optim.weight_cap=None as well as a number.
    optim.weight_cap = ml_collections.FieldReference(10.0, field_type=object)
    optim.grad_clip = 0.0            # adam / sgd: global-norm clip, 0 = none
    optim.lr_decay = 1.0             # adam / sgd: lr decays geometrically to learning_rate × lr_decay at the end
    optim.lr_scaling = "off"         # off | authors: learning rates × a = 1 + c/(N_R h_x), N_R = 1/p
    optim.lr_scaling_c = 0.1         # c of the authors' scaling (wfr / sgd)

    config.sampler = sampler = ml_collections.ConfigDict()
    sampler.name = "ula"             # ula (projected on the sphere) | mala | hmc | jarzynski | flow_mcmc
    sampler.num_particles = 20_000
    sampler.step_size = 0.02         # h_x: x <- x - h ∇E + sqrt(2 h T) ξ
    sampler.temperature = 1.0        # T: the particles target exp(-E/T)
    sampler.num_steps = 1            # K sampler steps per train step
    # replay buffer: B of the num_particles move each step (IGEBM, JEM); None: all move
    sampler.particles_per_step = ml_collections.config_dict.placeholder(int)
    sampler.loop = "auto"            # scan (one compiled loop) | host (K jitted steps from Python) | auto: scan
    sampler.clip = False             # ula on images: clip particles to data.data_range after each step
    sampler.grad_clamp = ml_collections.config_dict.placeholder(float)  # ula: per-pixel clamp of ∇E
    sampler.noise_ahead = False      # ula: draw the K steps' normals before their loop (image configs)
    sampler.antithetic = True
    sampler.num_integration_steps = 1  # hmc only
    sampler.target_acceptance = ml_collections.config_dict.placeholder(float)  # mala: adapt h to this
    sampler.adaptation_rate = 0.05   # mala: gain of the Robbins-Monro step-size rule
    sampler.ess_threshold = 0.5      # jarzynski: resample when ESS/N falls below this
    sampler.jarzynski_kernel = "ula"  # jarzynski: ula (weighted moves) | mala (accepted moves; images need it)
    sampler.jarzynski_start = "model"  # jarzynski: walkers start as samples of the initial model | flat (uniform on the box)
    # flow_mcmc: num_steps cycles of (global flow move, local_steps MALA steps), then
    # flow_steps Adam steps of the flow on the chains (docs: ebmdual/flow_mcmc.py)
    sampler.global_move = "imh"      # flow_mcmc: imh (independent MH) | isir
    sampler.num_proposals = 2        # flow_mcmc isir: M candidates, the current state included
    sampler.local_steps = 1          # flow_mcmc: MALA steps after each global move
    sampler.flow_kind = "spline"     # flow_mcmc: spline (rational-quadratic) | affine (RealNVP)
    sampler.flow_layers = 4
    sampler.flow_hidden = 64
    sampler.flow_bins = 8            # spline flows: bins on [-flow_bound, flow_bound]
    sampler.flow_bound = 5.0
    sampler.flow_learning_rate = 1e-3
    sampler.flow_steps = 1           # flow Adam steps per train step
    sampler.flow_reverse_kl = 0.0    # weight of the reverse KL in the flow's loss
    # flow_mcmc: the model is p ∝ q_φ · exp(−E_θ), the flow its trained base and the proposal
    # (the flow_learning_rate/steps/reverse_kl keys are then unused: ML trains φ with θ)
    sampler.flow_tilted = False

    config.train = train = ml_collections.ConfigDict()
    train.num_steps = 4000
    train.loss = "ml"                # ml | sm | ssm | dsm | ksd
    train.restart_prob = 1 / 40
    train.restart_schedule = "random"   # random (i.i.d. per particle) | periodic (all, every 1/p steps)
    train.restart_decay = 1.0        # p decays geometrically to restart_prob × restart_decay at the end
    train.restart_to = "data"        # data | noise
    train.restart_noise_std = 1.0    # restart_to=noise in R^d: N(0, std² I)
    train.log_every = 100            # steps per compiled call and per metrics line
    train.eval_every = 500
    train.dsm_sigma = 0.1
    train.ssm_num_projections = 1
    train.ksd_kernel = "imq"
    train.ksd_bandwidth = 1.0
    train.checkpoint_every = 500     # steps between checkpoints (a multiple of log_every)
    train.keep_checkpoints = 3       # newest checkpoints kept
    train.on_divergence = "stop"     # stop | rollback (to the last good checkpoint, lower lr)
    train.max_energy_gap = 1e4       # |mean E(particles) - mean E(data)| beyond this is divergence
    train.rollback_lr_factor = 0.5   # learning rates are multiplied by this at each rollback
    train.max_rollbacks = 3

    config.eval = evaluation = ml_collections.ConfigDict()
    evaluation.num_samples = 10_000  # exact samples of p* (Dataset.reference: teacher, mixtures)
    evaluation.num_uniform = 100_000  # d > 3 sphere: uniform points of the second KL estimate
    evaluation.grid_size = 100       # quadrature grid (S^2, 2-D)
    # images (docs/evaluation.md): test NLL in bits/dim by annealed importance sampling
    # on the box data_range^D, Fréchet distance and class histogram of the particles under
    # a classifier trained once on the training split and cached in classifier_dir
    evaluation.ais_chains = 64
    evaluation.ais_temperatures = 500
    evaluation.ais_repeats = 3
    evaluation.ais_step_size = 1e-4
    evaluation.num_test_images = 1000   # images: held-out images whose mean energy enters the NLL
    evaluation.classifier_dir = "~/.cache/ebmdual/classifiers"
    evaluation.classifier_steps = 1500
    return config


def tiny_image_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The `:tiny` variant of an image config (`--config=experiments/mnist.py:tiny`): the
    same task shrunk to seconds of CPU work, which the test suite runs end to end. A
    2-layer ConvEnergy (4, 8), 256 train/test items, N = 256 particles of which 64 move 3
    steps, 20 train steps, AIS with 8 chains × 10 temperatures × 2 repeats on 32 held-out
    images, no classifier (eval.classifier_steps = 0)."""
    config.data.num_train = 256
    config.data.num_test = 256
    config.data.batch_size = 64
    config.model.conv_features = (4, 8)
    config.sampler.num_particles = 256
    config.sampler.particles_per_step = 64
    config.sampler.num_steps = 3
    train = config.train
    train.num_steps = 20
    train.log_every = 10
    train.eval_every = 20
    train.checkpoint_every = 20
    e = config.eval
    e.ais_chains = 8
    e.ais_temperatures = 10
    e.ais_repeats = 2
    e.num_test_images = 32
    e.classifier_steps = 0
    return config


def with_variant(config: ml_collections.ConfigDict, variant: str,
                 variants: dict) -> ml_collections.ConfigDict:
    """Applies the named variant of a config file (`--config=experiments/x.py:variant`); ''
    is the config itself. An unknown name is a ValueError naming the known ones."""
    if not variant:
        return config
    if variant not in variants:
        raise ValueError(f"unknown config variant {variant!r}; known: {', '.join(variants)}")
    return variants[variant](config)
