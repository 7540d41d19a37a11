"""workbench: weight-space generative modelling.

The package follows the pipeline, shared layers below and one subpackage per system above:

    core/        params (ParamSpec), normalise, diffusion (schedules, samplers), train_loop (+ EMA), io, config, timing
    data.py      task datasets, deterministic splits, minibatch schedules
    nn/          autoencoder, unet1d, mlp_denoiser, pca, architectures (model registry), encoders (conditions)
    zoo/         protocol (the zoo interface), dense and seeds zoos (config, collection, storage, training), lora/
    evaluation/  evaluate (many members at once), baselines, tables (+ verdict), memorisation
    generator/   the shared latent-diffusion generator (PDiff: normaliser, autoencoder, latent DDPM) and alignment
    systems/     pdiff/ (seeds, ablations, experiment), cond_pdiff/ (generator, evaluation, experiment, style/)
    app/         cli, bench, report, widgets, plots, presets, robustness

A system imports only the shared layers (style may use cond_pdiff); the app layer and the notebooks import systems.
"""
