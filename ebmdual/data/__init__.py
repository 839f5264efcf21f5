"""Data sets for ebmdual. Synthetic tasks live in `ebmdual.data.synthetic`."""

from ebmdual.data.synthetic import (
    DATASET_NAMES,
    Dataset,
    GaussianMixture,
    Teacher,
    eight_gaussians,
    energy_lower_bound,
    get_dataset,
    line_mixture,
    make_mixture,
    mixture_box,
    mixture_energy,
    paper_teacher,
    sample_checkerboard,
    sample_rings,
    sample_sphere,
    sample_teacher,
    teacher_energy,
)

__all__ = [
    "DATASET_NAMES", "Dataset", "GaussianMixture", "Teacher", "eight_gaussians",
    "energy_lower_bound", "get_dataset", "line_mixture", "make_mixture", "mixture_box",
    "mixture_energy", "paper_teacher", "sample_checkerboard", "sample_rings", "sample_sphere",
    "sample_teacher", "teacher_energy",
]
