"""Text classification: tokenizer, vocabulary, CSV errors, packing invariance, training, CLI, evaluate, similarity."""

import json
import subprocess
import sys

import pytest
import torch

import mnistlab
from mnistlab.errors import DataError, UsageError
from mnistlab.text import Vocab, cosine_similarity, predict_text, tokenize, train_text
from mnistlab.text.csvdata import read_text_csv, split_text_indices
from mnistlab.text.model import TextClassifier, pad_batch

TEST_KEYS = {"accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro", "confusion_matrix", "per_class"}


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """One short run on the shipped data, shared by the tests that need a trained model."""
    torch.set_num_threads(1)  # tiny batches: threads only add overhead, and the CPU is shared
    out = tmp_path_factory.mktemp("runs")
    return train_text("builtin:sentiment", out=str(out), epochs=8, model="gru", embed_dim=32, hidden=32,
                      progress="quiet", seed=0)


# ----------------------------------------------------------------------------- tokenizer and vocabulary

def test_tokenizer_english_lowercase_punctuation():
    assert tokenize("The Movie was GREAT!") == ["the", "movie", "was", "great", "!"]
    assert tokenize("well, it's fine...") == ["well", ",", "it", "'", "s", "fine", ".", ".", "."]
    assert tokenize("   ") == []


def test_tokenizer_keeps_korean_and_other_scripts_whole():
    assert tokenize("이 영화 정말 재미있어요!") == ["이", "영화", "정말", "재미있어요", "!"]
    assert tokenize("최악의 서비스였다.") == ["최악의", "서비스였다", "."]
    assert tokenize("Café ПРИВЕТ 日本語") == ["café", "привет", "日本語"]


def test_vocab_specials_min_freq_max_size():
    texts = [["a", "a", "a", "b", "b", "c"], ["a", "d"]]
    v = Vocab.build(texts)
    assert v.itos[:2] == ["<pad>", "<unk>"] and v.stoi["<pad>"] == 0 and v.stoi["<unk>"] == 1
    assert v.itos[2:] == ["a", "b", "c", "d"]  # by frequency, ties alphabetical
    assert Vocab.build(texts, min_freq=2).itos == ["<pad>", "<unk>", "a", "b"]
    assert Vocab.build(texts, max_size=3).itos == ["<pad>", "<unk>", "a"]
    assert v.encode(["a", "zzz"]) == [2, 1]
    assert v.encode([]) == [1]  # empty text -> one <unk>
    assert v.encode(["a"] * 10, max_len=3) == [2, 2, 2]


def test_vocab_roundtrip(tmp_path):
    v = Vocab.build([["좋아요", "great"]])
    v.save(tmp_path / "vocab.json")
    assert Vocab.load(tmp_path / "vocab.json").itos == v.itos


def test_vocab_built_from_train_split_only(text_run):
    data = read_text_csv("builtin:sentiment")
    cfg = text_run.config
    train_idx, valid_idx, test_idx = split_text_indices(
        len(data.texts), cfg["test_fraction"], cfg["valid_fraction"], cfg["seed"]
    )
    train_words = {w for i in train_idx for w in tokenize(data.texts[i])}
    held_out = {w for i in valid_idx + test_idx for w in tokenize(data.texts[i])} - train_words
    vocab = Vocab.load(text_run.path / "vocab.json")
    assert held_out, "the split should leave some words only in valid/test"
    assert not held_out & set(vocab.itos)
    assert set(vocab.itos[2:]) == train_words


# ----------------------------------------------------------------------------- CSV

def test_shipped_data_balanced_bilingual():
    data = read_text_csv("builtin:sentiment")
    assert data.classes == ["negative", "positive"]
    assert 300 <= len(data.texts) <= 400
    assert abs(data.labels.count(0) - data.labels.count(1)) <= 10
    korean = sum(any("\uac00" <= ch <= "\ud7a3" for ch in t) for t in data.texts)
    assert 0.4 < korean / len(data.texts) < 0.6


def test_csv_bad_rows_with_line_numbers(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text('text,label\ngood film,positive\n,negative\nbad film,\n"multi\nline",positive\na,b,c\nok,positive\n',
                 encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_text_csv(str(p))
    msg = str(err.value)
    assert "3 bad rows" in msg
    assert "line 3: missing text" in msg and "line 4: missing label" in msg and "line 7: 3 columns" in msg
    # unknown labels, when the classes are fixed by a trained run
    p.write_text("text,label\nfine,positive\nmeh,neutral\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3: unknown label 'neutral'"):
        read_text_csv(str(p), classes=["negative", "positive"])


def test_csv_missing_columns_named(tmp_path):
    p = tmp_path / "cols.csv"
    p.write_text("review,sentiment\nnice,positive\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no column 'text' or 'label'.*review, sentiment"):
        read_text_csv(str(p))
    data = read_text_csv(str(p), text_column="review", label_column="sentiment")
    assert data.texts == ["nice"] and data.classes == ["positive"]
    with pytest.raises(DataError, match="builtin:nope"):
        read_text_csv("builtin:nope")


# ----------------------------------------------------------------------------- padding and packing

@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_prediction_same_alone_and_batched_with_long_sentences(cell, bidirectional):
    torch.manual_seed(0)
    model = TextClassifier(50, 3, cell=cell, embed_dim=8, hidden=6, layers=2, bidirectional=bidirectional).eval()
    short = [5, 7, 9]
    others = [list(range(2, 42)), [3] * 25, [4, 8]]
    with torch.no_grad():
        alone = model(pad_batch([short]))
        batched = model(pad_batch([others[0], short, others[1], others[2]]))
    # the short sentence is padded with 37 zeros in the batch; packing must hide them
    torch.testing.assert_close(batched[1:2], alone, atol=1e-5, rtol=0)


def test_bidirectional_doubles_classifier_input():
    assert TextClassifier(10, 2, hidden=16).classifier.in_features == 16
    model = TextClassifier(10, 2, hidden=16, bidirectional=True)
    assert model.classifier.in_features == 32
    assert model.encode(pad_batch([[2, 3], [4]])).shape == (2, 32)


# ----------------------------------------------------------------------------- training, run folder, CLI

def test_short_training_learns_and_writes_run_folder(text_run):
    hist = text_run.history
    assert len(hist) == 8
    assert hist[0]["train_accuracy"] < 0.75 and max(r["train_accuracy"] for r in hist) > 0.85
    s = text_run.summary
    assert s["status"] == "completed" and TEST_KEYS <= set(s)
    assert {"train_seconds", "epochs_run", "best_epoch", "stop_reason"} <= set(s)
    assert s["accuracy"] > 0.55 and s["auc_macro"] is not None
    for name in ["config.yaml", "metrics.csv", "summary.json", "environment.json", "vocab.json", "labels.json",
                 "checkpoints/best.pt", "checkpoints/last.pt"]:
        assert (text_run.path / name).is_file(), name
    assert text_run.config["task"] == "text" and text_run.config["model"] == "gru"
    ckpt = torch.load(text_run.path / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["data"]["classes"] == ["negative", "positive"]


def test_text_run_gets_curves_confusion_matrix_and_its_mistakes_in_the_report(text_run):
    for name in ["plots/curves.png", "plots/confusion_matrix.png", "report.md", "report.html"]:
        assert (text_run.path / name).is_file(), name
    assert not (text_run.path / "plots" / "misclassified.png").exists()  # image grids are for image runs
    md = (text_run.path / "report.md").read_text(encoding="utf-8")
    s = text_run.summary
    assert f"{s['accuracy']:.4f}" in md and "| texts |" in md
    wrong = round((1 - s["accuracy"]) * s["samples"])
    section = md.split("## The most confident mistakes on the test split")[1].split("\n## ")[0]
    assert f"of {wrong} mistakes" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| text |")]
    assert len(rows) == min(wrong, 24)
    texts = set(read_text_csv("builtin:sentiment").texts)
    for row in rows:
        text, true, pred, conf = [c.strip() for c in row.strip("|").split(" | ")]
        assert text in texts and true != pred and {true, pred} <= {"negative", "positive"} and 0.5 <= float(conf) <= 1
    confs = [float(r.strip("|").split(" | ")[-1]) for r in rows]
    assert confs == sorted(confs, reverse=True)


def test_evaluate_rewrites_a_text_runs_report(text_run):
    (text_run.path / "report.md").unlink()
    (text_run.path / "plots" / "confusion_matrix.png").unlink()
    metrics = mnistlab.evaluate(text_run, plots=True)
    assert (text_run.path / "plots" / "confusion_matrix.png").is_file()
    assert f"{metrics['accuracy']:.4f}" in (text_run.path / "report.md").read_text(encoding="utf-8")


def test_evaluate_last_labels_a_text_runs_report_last(text_run):
    mnistlab.evaluate(text_run, checkpoint="last", plots=True)
    md = (text_run.path / "report.md").read_text(encoding="utf-8")
    assert "| checkpoint scored | last (epoch" in md


def test_text_run_without_a_test_split_says_so_in_its_report(tmp_path):
    run = train_text("builtin:sentiment", out=str(tmp_path), epochs=1, test_fraction=0.0, embed_dim=8, hidden=8,
                     progress="quiet")
    md = (run.path / "report.md").read_text(encoding="utf-8")
    assert "no test split" in md and (run.path / "plots" / "curves.png").is_file()
    assert not (run.path / "plots" / "confusion_matrix.png").exists()


def test_text_help_does_not_import_torch():
    code = (
        "import sys\nfrom mnistlab.cli import main\n"
        "for argv in (['text', '--help'], ['text', 'train', '--help'], ['text', 'predict', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stderr.strip().endswith("NO-TORCH"), res.stderr[-500:]
    assert "--bidirectional" in res.stdout and "builtin:sentiment" in res.stdout


def test_predict_api(text_run):
    out = predict_text(text_run, ["the movie was wonderful", "", "?!"])
    assert [set(r) for r in out] == [{"text", "label", "confidence", "probabilities"}] * 3
    assert all(r["label"] in ("negative", "positive") and 0.5 <= r["confidence"] <= 1 for r in out)


def test_predict_cli(text_run):
    texts = ["the movie was wonderful", "최악의 서비스였다"]
    res = subprocess.run([sys.executable, "-m", "mnistlab", "text", "predict", str(text_run.path), *texts],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, texts):
        label, conf, echoed = line.split("\t")
        assert label in ("negative", "positive") and 0.5 <= float(conf) <= 1 and echoed == text
    res = subprocess.run(
        [sys.executable, "-m", "mnistlab", "text", "predict", str(text_run.path), "--json", "좋아요"],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0 and json.loads(res.stdout)["text"] == "좋아요"


def test_evaluate_text_run(text_run):
    from mnistlab.evaluation import evaluate

    m = evaluate(text_run.path)
    assert TEST_KEYS <= set(m) and m["split"] == "test"
    # the same split and checkpoint as training's test metrics
    assert m["accuracy"] == pytest.approx(text_run.summary["accuracy"])
    assert m["samples"] == text_run.summary["test_texts"]


# ----------------------------------------------------------------------------- cosine similarity

@pytest.mark.parametrize("method", ["embedding", "encoder"])
def test_cosine_similarity_properties(text_run, method):
    from mnistlab.text.engine import load_text_run

    tr = load_text_run(text_run)
    # a run folder works as well as a loaded TextRun
    same = "the food was great"
    assert cosine_similarity(text_run, same, same, method) == pytest.approx(1.0, abs=1e-6)
    same = "이 영화 정말 재미있어요"
    assert cosine_similarity(tr, same, same, method) == pytest.approx(1.0, abs=1e-6)
    pairs = [("great movie", "최악이에요"), ("", "wonderful"),
             ("the staff were rude", "직원들이 친절했어요")]
    for a, b in pairs:
        s = cosine_similarity(tr, a, b, method)
        assert -1.0 <= s <= 1.0
        assert s == pytest.approx(cosine_similarity(tr, b, a, method), abs=1e-9)
    with pytest.raises(Exception, match="embedding or encoder"):
        cosine_similarity(tr, "a", "b", "nope")


# ----------------------------------------------------------------------------- resume

class InterruptAt(mnistlab.Callback):
    """Ctrl-C at the start of epoch `at`."""

    def __init__(self, at):
        self.at = at

    def on_epoch_start(self, trainer, state):
        if state.epoch == self.at:
            raise KeyboardInterrupt()


def test_text_resume_equals_uninterrupted(tmp_path):
    # dropout, a cosine schedule, shuffled batches: all of it must come back from last.pt
    settings = dict(out=str(tmp_path), epochs=4, model="gru", embed_dim=16, hidden=16, dropout=0.3,
                    scheduler="cosine", seed=3, progress="quiet")
    full = train_text("builtin:sentiment", name="full", **settings)
    with pytest.raises(KeyboardInterrupt, match="mnistlab text train --resume"):
        train_text("builtin:sentiment", name="cut", callbacks=[InterruptAt(3)], **settings)
    cut = tmp_path / "cut"
    assert json.loads((cut / "summary.json").read_text())["status"] == "interrupted"
    resumed = train_text(resume=str(cut), progress="quiet")
    assert resumed.path == cut and resumed.summary["status"] == "completed"
    for key in ("accuracy", "f1_macro", "auc_macro", "best_epoch", "confusion_matrix"):
        assert full.summary[key] == resumed.summary[key], key
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]
    assert (cut / "report.md").is_file()


def test_text_resume_trains_a_finished_run_longer_and_refuses_a_finished_one(tmp_path):
    settings = dict(out=str(tmp_path), model="gru", embed_dim=16, hidden=16, seed=1, progress="quiet")
    short = train_text("builtin:sentiment", name="short", epochs=2, **settings)
    longer = train_text(resume=str(short.path), epochs=4, progress="quiet")
    straight = train_text("builtin:sentiment", name="straight", epochs=4, **settings)
    assert [r["train_loss"] for r in longer.history] == [r["train_loss"] for r in straight.history]
    with pytest.raises(mnistlab.errors.MnistlabError, match="already finished its 4 epochs"):
        train_text(resume=str(short.path), progress="quiet")


def test_resume_sends_each_kind_of_run_to_its_own_command(text_run, tmp_path):
    with pytest.raises(UsageError, match="text run: resume it with mnistlab text train --resume"):
        mnistlab.train(mnistlab.TrainConfig(resume=str(text_run.path), progress="quiet"))
    image_run = tmp_path / "img"
    image_run.mkdir()
    (image_run / "config.yaml").write_text("model: logistic\n", encoding="utf-8")
    with pytest.raises(UsageError, match="not a text run"):
        train_text(resume=str(image_run), progress="quiet")
    res = subprocess.run([sys.executable, "-m", "mnistlab", "text", "train"], capture_output=True, text=True)
    assert res.returncode == 2 and "--data FILE.csv (or --resume RUN)" in res.stderr
