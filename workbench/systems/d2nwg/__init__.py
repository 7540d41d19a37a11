"""D2NWG: dataset-conditioned generation of classifier heads for unseen datasets (meta-dataset zoo, β-VAE, Set
Transformer dataset encoder aligned contrastively, class-token latent diffusion, honest baselines)."""

from workbench.systems.d2nwg.experiment import D2NWGResults, d2nwg_experiment
from workbench.systems.d2nwg.generator import D2NWG, D2NWGConfig, fit_or_load_d2nwg
from workbench.systems.d2nwg.meta_dataset import DatasetRecipe
from workbench.systems.d2nwg.zoo import DatasetZoo, DatasetZooConfig, SupportSet, collect_dataset_zoo

__all__ = ["D2NWG", "D2NWGConfig", "D2NWGResults", "DatasetRecipe", "DatasetZoo", "DatasetZooConfig", "SupportSet",
           "collect_dataset_zoo", "d2nwg_experiment", "fit_or_load_d2nwg"]
