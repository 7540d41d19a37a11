"""Notebook 07's dataset composer: the plain compute function (compose_and_generate) on the ci preset's D2NWG
results, its bad-input messages, and the app driven headlessly (button callback, first display, error display)."""

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.app.presets import load_preset
from workbench.app.widgets import DatasetComposerApp, compose_and_generate, compose_recipe, parse_classes
from workbench.systems.d2nwg.experiment import d2nwg_experiment

METHODS = ["generated", "generated (picked on support)", "random", "retrieval", "retrieval (rows matched)",
           "prototype", "few-shot probe", "probe on the full training split"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return d2nwg_experiment(**load_preset("ci").d2nwg_inputs(), run_dir=tmp_path_factory.mktemp("d2nwg"), seed=0,
                            progress=False)


@pytest.fixture(scope="module")
def first_unseen(results):
    return results.zoo.recipe(results.zoo.names("unseen")[0])


@pytest.fixture(scope="module")
def held_out(results, first_unseen):
    r = first_unseen
    messages = []
    out = compose_and_generate(results, r.source, ",".join(map(str, r.classes)), r.domain, 5, n=6, seed=0,
                               progress=messages.append)
    return out, messages


def test_held_out_dataset_reproduces_the_experiment_row(results, first_unseen, held_out):
    out, messages = held_out
    assert out["recipe"] == first_unseen and "held-out dataset of the zoo" in out["novelty"]
    acc = out["accuracy"]
    assert list(acc.index) == [*METHODS, "zoo's trained heads"]
    assert acc.loc["generated", "heads"] == 6 and acc.loc["prototype", "heads"] == 1
    assert ((acc["min"] <= acc["mean"] + 1e-9) & (acc["mean"] <= acc["max"] + 1e-9)).all()
    assert acc[["mean", "min", "max"]].apply(lambda c: c.between(0, 100)).all().all()
    # same support draw (seed + 0 for the first held-out dataset), sampling seed and baselines as unseen_table
    row = results.unseen.loc[first_unseen.name]
    for ours, theirs in (("generated", "generated_mean"), ("generated (picked on support)", "selected_by_support"),
                         ("random", "random"), ("retrieval", "retrieval"),
                         ("retrieval (rows matched)", "retrieval_matched"), ("prototype", "prototype"),
                         ("few-shot probe", "fewshot_probe"), ("zoo's trained heads", "original")):
        assert acc.loc[ours, "mean"] == pytest.approx(row[theirs], abs=1e-4), ours
    assert acc.loc["generated", "max"] == pytest.approx(row["generated_max"], abs=1e-4)
    assert out["nearest_seen"] == row["retrieved_from"]
    assert len(messages) >= 3 and all(isinstance(m, str) and m for m in messages)


def test_support_images_are_the_support_sets_images(results, held_out):
    out, _ = held_out
    s = out["support"]
    assert out["images"].shape == (25, 3, 28, 28) and torch.equal(out["labels"], s.labels)
    assert torch.bincount(s.labels).tolist() == [5] * 5
    # the images shown are the ones whose features condition the generator
    feats = results.zoo.featurizer(out["images"])
    assert torch.allclose(feats, s.features, atol=1e-4)


def test_curves_tables_and_figures(held_out):
    out, _ = held_out
    curves, table = out["curves"], out["curve_table"]
    assert set(curves["start"]) == {"generated", "random", "prototype"}
    assert sorted(curves["step"].unique()) == list(range(101))
    assert list(table.index) == [0, 1, 5, 25, 100] and list(table.columns) == ["generated", "random", "prototype"]
    assert table.loc[0, "generated"] == pytest.approx(round(out["accuracy"].loc["generated (picked on support)",
                                                                                 "mean"], 1))
    assert table.loc[0, "prototype"] == pytest.approx(round(out["accuracy"].loc["prototype", "mean"], 1))
    k = out["steps_to_match"]
    assert k is None or 0 <= k <= 100
    figs = out["figures"]
    assert figs["support"].data[0].type == "image"
    assert list(figs["accuracy"].data[0].x) == list(out["accuracy"].index)
    assert {t.name for t in figs["curves"].data} == {"generated", "random", "prototype"}
    assert "Generated heads" in out["summary"] and out["seconds"] > 0


def test_composed_dataset_outside_the_zoo(results):
    out = compose_and_generate(results, "printed", [3, 7, 1, 0, 9], "contrast", 2, n=3, seed=1)
    r = out["recipe"]
    assert r.name == "printed.contrast.3-7-1-0-9" and r.kind == "unseen_source" and r.name not in results.zoo.recipes
    assert "new dataset" in out["novelty"] and "not in the meta-dataset" in out["novelty"]
    assert list(out["accuracy"].index) == METHODS  # no trained heads in the zoo for a new dataset
    assert out["images"].shape[0] == 10 and torch.bincount(out["labels"]).tolist() == [2] * 5
    assert np.isfinite(out["accuracy"].to_numpy(dtype=float)).all()


def test_novelty_kinds(results):
    zoo = results.zoo
    seen = zoo.recipe(zoo.names("seen")[0])
    r, text = compose_recipe(zoo, seen.source, seen.classes, seen.domain)
    assert r == seen and "seen dataset" in text
    # a seen class set re-ordered in a seen domain is new (its rows score other classes)
    reordered = seen.classes[1:] + seen.classes[:1]
    r, text = compose_recipe(zoo, seen.source, reordered, seen.domain)
    assert r.kind == "unseen_combination" and "another label order" in text
    r, _ = compose_recipe(zoo, seen.source, seen.classes, zoo.config.unseen_domains[0])
    assert r.kind == "unseen_domain"
    r, _ = compose_recipe(zoo, "printed", seen.classes, seen.domain)
    assert r.kind == "unseen_source"


@pytest.mark.parametrize("classes, match", [
    ("3,7,1,0", "exactly 5 classes"),
    ("3,7,1,0,9,2", "exactly 5 classes"),
    ("3,7,3,0,9", "distinct"),
    ("3,7,1,0,10", "in 0–9"),
    ("3,7,-1,0,9", "in 0–9"),
    ("3,7,a,0,9", "not a list of class ids"),
    ("", "exactly 5 classes"),
    ([3, 7, 1.5, 0, 9], "whole numbers"),
])
def test_bad_classes_are_clear_errors(classes, match):
    with pytest.raises(ValueError, match=match):
        parse_classes(classes, 5)


def test_parse_classes_accepts_spaces_and_semicolons():
    assert parse_classes(" 3; 7 1,0 ,9 ", 5) == (3, 7, 1, 0, 9)
    assert parse_classes((3, 7, 1, 0, 9), 5) == (3, 7, 1, 0, 9)


@pytest.mark.parametrize("kwargs, match", [
    ({"source": "svhn"}, "source 'svhn' is unknown"),
    ({"domain": "sepia"}, "domain 'sepia' is unknown"),
    ({"shots": 0}, "shots must be a whole number from 1 to 10"),
    ({"shots": 11}, "shots must be a whole number from 1 to 10"),
    ({"shots": 2.5}, "shots must be a whole number"),
    ({"n": 0}, "n must be a positive whole number"),
])
def test_bad_inputs_are_clear_errors(results, kwargs, match):
    args = {"source": "mnist5k", "classes": "3,7,1,0,9", "domain": "identity", "shots": 5, **kwargs}
    n = args.pop("n", 2)
    with pytest.raises(ValueError, match=match):
        compose_and_generate(results, **args, n=n)


def test_unavailable_source_is_a_clear_error(results, monkeypatch):
    import workbench.app.widgets as widgets

    monkeypatch.setattr(widgets, "available_sources", lambda: {"mnist5k": True, "cifar10": False})
    with pytest.raises(ValueError, match="torchvision files"):
        compose_and_generate(results, "cifar10", "3,7,1,0,9", "identity", 5)


def test_app_headless_first_display_button_and_errors(results, first_unseen):
    app = DatasetComposerApp(results, n=3)
    assert app.result is None and app.out.outputs == ()
    assert app.button.layout.width == "auto" and app.button.description == app.label  # label not cut off
    box = app.widget()  # first display computes with the initial controls: the output area is never empty
    assert app.error is None and app.result["recipe"] == first_unseen
    kinds = [o["data"].keys() for o in app.out.outputs]
    assert len(kinds) == 6 and sum("application/vnd.plotly.v1+json" in k for k in kinds) == 3
    assert "done" in app.status.value and not app.button.disabled and app.button in box.children[3].children

    seen_states = []
    app._progress = lambda m: seen_states.append((app.button.disabled, app.button.description))  # during compute
    app.classes.value, app.domain.value, app.shots.value = "9, 8, 7, 6, 5", "blur", 2
    table = app.run()  # the button's callback
    assert isinstance(table, pd.DataFrame) and app.result["recipe"].name == f"{app.source.value}.blur.9-8-7-6-5"
    assert seen_states and all(d and desc != app.label for d, desc in seen_states)  # disabled while it runs
    assert not app.button.disabled and app.button.description == app.label

    app.classes.value = "1,1,2,3"  # a bad input: a message in the output area, no traceback, button usable again
    assert app.run() is None and app.result is None
    assert len(app.out.outputs) == 1
    text = app.out.outputs[0]["data"]["text/plain"]
    assert "exactly 5 classes" in text and "Traceback" not in text and not app.button.disabled
    app.classes.value = "1,2,3,4,5"  # and it recovers
    assert app.run() is not None and app.error is None
