"""The NLP setting of Cond P-Diff on a tiny randomly initialised BERT and a small text dataset made here: jsonl task
files, tokenisation, LoRA on query/value + head, resume, functional consistency, and the conditional generator."""

import json
import random

import pytest
import torch

from workbench.core.train_loop import LoopConfig
from workbench.generator.latent_diffusion import PDiffConfig
from workbench.systems.cond_pdiff.generator import CondPDiff, CondPDiffConfig
from workbench.zoo.lora.text import TextLoRAZooConfig, collect_text_lora_zoo, read_jsonl_task

GOOD, BAD = ["great", "lovely", "superb", "fine"], ["awful", "boring", "dull", "poor"]
SPORT, FOOD = ["match", "goal", "team", "race"], ["bread", "soup", "cake", "rice"]
FILLER = ["the", "a", "was", "really", "this", "it", "very", "so"]
TASKS = {
    "sentiment": {"name": "sentiment", "description": "Is the review positive?", "examples": ["great → yes", "dull → no"],
                  "classes": [[0], [1]]},
    "topic": {"name": "topic", "description": "Is the sentence about sport?", "examples": ["goal → yes", "soup → no"],
              "classes": [[0], [1]]},
    "negative": {"name": "negative", "description": "Is the review negative?", "examples": ["dull → yes", "great → no"],
                 "classes": [[0], [1]]},
}


def _write(tmp_path):
    rng = random.Random(0)
    data = tmp_path / "data"
    for task, (pos, neg) in {"sentiment": (GOOD, BAD), "topic": (SPORT, FOOD), "negative": (BAD, GOOD)}.items():
        for split, n in (("train", 200), ("test", 60)):
            rows = []
            for i in range(n):
                label = i % 2
                words = rng.sample(FILLER, 3) + [rng.choice(pos if label else neg)]
                rng.shuffle(words)
                rows.append(json.dumps({"text": " ".join(words), "label": label}))
            (data / task).mkdir(parents=True, exist_ok=True)
            (data / task / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    return data


def _tiny_bert(path):
    # imported here: transformers is slow to import and only the text models need it
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(GOOD + BAD + SPORT + FOOD + FILLER))
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    # transformers 5 takes the vocabulary as `vocab` (a path or a dict); 4.x called it `vocab_file`
    vocab = {w: i for i, w in enumerate(words)}
    BertTokenizerFast(vocab=vocab, do_lower_case=True).save_pretrained(path)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32,
                     initializer_range=0.5)  # BERT's 0.02 leaves a random tiny model's outputs nearly input-independent
    BertForSequenceClassification(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def text_zoo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text")
    cfg = TextLoRAZooConfig(model_path=str(_tiny_bert(tmp / "bert")), data_dir=str(_write(tmp)),
                            tasks=("sentiment", "topic"), unseen=("negative",), task_defs=TASKS, rank=4, alpha=8,
                            max_length=8, steps=120, keep_last=10, batch_size=32, lr=1e-2)
    return cfg, collect_text_lora_zoo(cfg, tmp / "zoo", progress=False)


def test_text_zoo_trains_lora_on_query_value_and_head(text_zoo):
    cfg, zoo = text_zoo
    names = zoo.spec.names
    assert any("query.lora_A" in n for n in names) and any("value.lora_B" in n for n in names)
    assert any(n.endswith("classifier.weight") for n in names)
    assert zoo.vectors().shape == (20, zoo.spec.numel)
    assert zoo.accuracies("sentiment").mean() > 60  # a keyword task the adapter can learn in 80 steps
    # the vectorised evaluator agrees with a plain forward of the peft model with the vector loaded
    data = zoo.data("topic")
    model = zoo.model()
    zoo.spec.load_into(model, zoo.vectors(["topic"])[-1])
    with torch.no_grad():
        acc = 100.0 * (model(data.x_test).argmax(1) == data.y_test).double().mean().item()
    assert abs(acc - zoo.accuracies("topic")[-1]) < 1e-6
    before = (zoo.root / "tasks" / "topic.safetensors").stat().st_mtime_ns
    collect_text_lora_zoo(cfg, zoo.root, progress=False)
    assert (zoo.root / "tasks" / "topic.safetensors").stat().st_mtime_ns == before


def test_conditional_generator_on_text_zoo(text_zoo, tmp_path):
    _, zoo = text_zoo
    gen = CondPDiff(CondPDiffConfig(pdiff=PDiffConfig(normaliser="task", autoencoder="pca", pca_components=8,
                                                      latent_channels=1, unet_channels=16,
                                                      diffusion_train=LoopConfig(steps=40, batch_size=16))),
                    cache_dir=tmp_path).fit(zoo, progress=False)
    table = zoo.config.task_table()
    for name in ("sentiment", "negative"):
        v = gen.sample(table[name], 3)
        assert v.shape == (3, zoo.spec.numel) and torch.isfinite(v).all()


def test_bad_task_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="export_glue"):
        read_jsonl_task(tmp_path / "missing.jsonl")
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_jsonl_task(p)
    with pytest.raises(ValueError, match="unknown text tasks"):
        TextLoRAZooConfig(tasks=("not_a_task",))


def test_glue_preset_names_what_is_missing(monkeypatch, tmp_path):
    from workbench.app.presets import load_preset
    from workbench.zoo.lora.text import collect_text_lora_zoo

    monkeypatch.setenv("WORKBENCH_TEXT_MODEL", str(tmp_path / "no_model"))
    monkeypatch.setenv("WORKBENCH_GLUE", str(tmp_path / "glue"))
    cfg = load_preset("glue").text_lora_zoo("glue")
    assert cfg.tasks == ("sst2", "rte", "mrpc", "cola") and cfg.model_path == str(tmp_path / "no_model")
    with pytest.raises(FileNotFoundError, match="local HF model directory"):
        collect_text_lora_zoo(cfg, tmp_path / "zoo", progress=False)
