"""d = 3, the orthogonal teacher θ1* = e1 ⊥ θ2* = e2: the authors' "monomodal" run.

f* = −5 relu(x1) − 5 relu(x2) has one minimum, at x ∝ e1 + e2 (docs/tasks.md, d = 3,
Orthogonal teacher). Everything else as experiments/sphere3d.py (m = 64 neurons with
signs −1, h_θ = 0.08·a, h_w = 0.04·a, authors' scaling, n = 10^4, N = 2n, h_x = 0.02,
periodic restarts with p = 1/60), 4000 iterations.

Published (the authors' result files; docs/tasks.md, Published numbers): KL 1.34 at
the start, 0.016 at iteration 4000, 0.0034 at iteration 20000.
"""

from experiments import sphere3d


def get_config():
    config = sphere3d.get_config()
    config.data.teacher = "orthogonal"
    return config
