"""Explanations on every model and method, hooks freed, thread safety, lesion scores, LIME repeatability."""

import threading

import numpy as np
import pytest
from PIL import Image

from core.explain.heatmaps import explain
from core.explain.scores import lesion_overlap, road_faithfulness
from core.registry.loader import load_model
from tests.conftest import FIXTURE

IMAGE = Image.open(next((FIXTURE / "images").glob("*.jpg"))).convert("RGB")
FAST = {"scorecam": {"batch_size": 128}, "lime": {"num_samples": 100}, "gradcam": {}}


@pytest.fixture(scope="module")
def models(tiny_weights):
    loaded = {name: load_model(tiny_weights / f) for name, f in
              (("teacher", "teacher.pt"), ("student", "student.pt"), ("quantized", "quantized.onnx"))}
    for name, c in loaded.items():
        c.name = name
    return loaded


def all_hooks(module):
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@pytest.mark.parametrize("model", ["teacher", "student", "quantized"])
@pytest.mark.parametrize("method", ["gradcam", "scorecam", "lime"])
def test_heatmap_shape_and_range(models, model, method):
    e = explain(models[model], IMAGE, method, float_classifier=models["student"], **FAST[method])
    assert e.heatmap.shape == (IMAGE.height, IMAGE.width)
    assert e.heatmap.dtype == np.float32 and 0 <= e.heatmap.min() and e.heatmap.max() <= 1
    assert e.overlay.size == IMAGE.size and e.seconds > 0
    if model == "quantized" and method != "lime":
        assert e.notes and "int8" in e.notes[0]
    if method == "lime":
        assert {"seed", "num_samples", "segmentation"} <= set(e.settings)
    else:
        assert e.settings["target_layers"]


def test_any_target_class(models):
    e = explain(models["student"], IMAGE, "gradcam", target="vasc")
    assert e.target == "vasc"


def test_no_hooks_or_gradients_left_behind(models):
    module = models["student"].module
    before = all_hooks(module)
    for method in ("gradcam", "scorecam"):
        explain(models["student"], IMAGE, method, **FAST[method])
    assert all_hooks(module) == before == 0
    assert all(p.grad is None for p in module.parameters())


def test_two_threads_get_the_same_answer_as_one(models):
    images = [IMAGE, IMAGE.transpose(Image.FLIP_LEFT_RIGHT).rotate(90, expand=True)]
    reference = [explain(models["student"], im, "gradcam").heatmap for im in images]
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(5):
                results.setdefault(i, []).append(explain(models["student"], images[i], "gradcam").heatmap)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(2):
        for heat in results[i]:
            np.testing.assert_allclose(heat, reference[i], atol=1e-5)


def test_each_thread_copies_a_model_once_and_lets_it_go(models):
    """CAM hooks go on a per-thread private copy, made on the thread's first explanation and reused; another thread
    gets its own; the copy goes when the shared model does (a promoted model's predecessor is not kept)."""
    import copy
    import gc

    from core.explain import heatmaps

    shared = copy.deepcopy(models["student"].module)
    mine = heatmaps._private_copy(shared)
    assert heatmaps._private_copy(shared) is mine and mine.module is not shared
    other = []
    worker = threading.Thread(target=lambda module, out: out.append(heatmaps._private_copy(module)),
                              args=(shared, other))
    worker.start()
    worker.join()
    assert other[0].module is not mine.module
    held = len(heatmaps._per_thread.copies)
    del shared
    gc.collect()
    assert len(heatmaps._per_thread.copies) == held - 1


def test_lime_is_repeatable_with_a_seed(models):
    a = explain(models["student"], IMAGE, "lime", num_samples=100, seed=7)
    b = explain(models["student"], IMAGE, "lime", num_samples=100, seed=7)
    np.testing.assert_array_equal(a.heatmap, b.heatmap)


def test_progress_callback_reaches_total(models):
    seen = []
    explain(models["student"], IMAGE, "scorecam", progress=lambda d, t: seen.append((d, t)), batch_size=128)
    assert seen and seen[-1][0] == seen[-1][1]


def test_lesion_overlap_known_answer():
    mask = np.zeros((10, 20), dtype=bool)
    mask[:, :5] = True  # lesion = left quarter
    heat = np.zeros((10, 20), dtype=np.float32)
    heat[:, :5] = 1.0
    heat[:, 5:10] = 1.0  # half of the energy inside the lesion, peak (first max) inside
    scores = lesion_overlap(heat, mask)
    assert scores["energy_in_lesion"] == pytest.approx(0.5)
    assert scores["lesion_area_fraction"] == pytest.approx(0.25)
    assert scores["pointing_game"] == 1.0
    heat2 = np.zeros((10, 20), dtype=np.float32)
    heat2[3, 15] = 1.0
    assert lesion_overlap(heat2, mask) == {"energy_in_lesion": 0.0, "lesion_area_fraction": 0.25, "pointing_game": 0.0}


def test_road_faithfulness_is_finite(models):
    e = explain(models["student"], IMAGE, "gradcam")
    score = road_faithfulness(models["student"], IMAGE, e.heatmap, 0)
    assert np.isfinite(score) and -1 <= score <= 1


def test_lime_samples_built_at_model_size_keep_the_top_superpixels(monkeypatch):
    """LIME builds its perturbed samples at the model's input size; with the same seed it finds the same top
    superpixels as lime's own loop at the 224 px view with a PIL resize per sample (shipped student, a gallery
    image)."""
    import torch
    from lime import lime_image

    from core.data.preprocess import resize_uint8, to_model_tensor
    from core.explain import heatmaps
    from tests.conftest import ROOT

    student = load_model("student", root=ROOT / "weights")
    cfg = student.config
    image = Image.open(sorted((ROOT / "assets" / "gallery").glob("*.jpg"))[3]).convert("RGB")
    fast = explain(student, image, "lime", num_samples=300)

    class PerSamplePil(lime_image.LimeImageExplainer):
        def __init__(self, to_model, size, shown=None, **kwargs):
            super().__init__(**kwargs)

        def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10):
            def resized(batch):
                arr = np.stack([resize_uint8(Image.fromarray(b.astype(np.uint8)), cfg.img_size) for b in batch])
                return classifier_fn(to_model_tensor(torch.from_numpy(arr), cfg))
            return super().data_labels(image, fudged_image, segments, resized, num_samples, batch_size)

    monkeypatch.setattr(heatmaps, "BatchedLimeImageExplainer", PerSamplePil)
    reference = explain(student, image, "lime", num_samples=300)
    # the same three top superpixels (near-tied weights may swap places within them)
    assert set(fast.settings["top_segments"][:3]) == set(reference.settings["top_segments"][:3])
    assert np.corrcoef(fast.heatmap.ravel(), reference.heatmap.ravel())[0, 1] > 0.95


def test_onnx_runtime_twin_keeps_the_maps(tmp_path, monkeypatch):
    """Score-CAM and LIME through the student's ONNX Runtime twin give the eager path's maps."""
    from core.registry.loader import with_batch_runtime
    from tests.conftest import ROOT

    monkeypatch.setenv("DERMADISTILL_CACHE", str(tmp_path))
    image = Image.open(sorted((ROOT / "assets" / "gallery").glob("*.jpg"))[5]).convert("RGB")
    eager = load_model("student", root=ROOT / "weights")
    fast = with_batch_runtime(load_model("student", root=ROOT / "weights"))
    assert fast.batch_session is not None and list(tmp_path.glob("onnx/*.onnx"))
    a, b = (explain(c, image, "scorecam") for c in (eager, fast))
    assert np.abs(a.heatmap - b.heatmap).max() < 0.02
    a, b = (explain(c, image, "lime", num_samples=300) for c in (eager, fast))
    assert a.settings["top_segments"][:3] == b.settings["top_segments"][:3]


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "lime"])
def test_maps_depend_on_the_weights_and_the_class(method):
    """Adebayo et al. 2018: randomised weights and another explained class both change the map (shipped
    student: the tiny fixture model is too untrained for its classes to differ)."""
    from core.explain.sanity import sanity_checks
    from tests.conftest import ROOT

    student = load_model("student", root=ROOT / "weights")
    image = Image.open(sorted((ROOT / "assets" / "gallery").glob("*.jpg"))[5]).convert("RGB")
    result = sanity_checks(student, image, method, **FAST[method])
    assert abs(result["randomized_weights_rank_corr"]) < 0.5, result
    assert result["other_class_rank_corr"] < 0.95, result


def test_search_records_settings_that_become_the_defaults(private_weights, monkeypatch):
    """`core.explain.search` on the fixture's validation images (a reduced grid): the chosen settings are
    recorded for that model file, `explain` then uses them and says so, and another model keeps the
    built-in defaults."""
    from core.explain import setting_search as search_mod
    from core.explain.heatmaps import describe_settings

    monkeypatch.setattr(search_mod, "LIME_GRID", {"hide": ("black", "blurred"), "n_segments": (20,)})
    monkeypatch.setattr(search_mod, "LIME_SAMPLES", 60)
    monkeypatch.setattr(search_mod, "LIME_SAMPLE_COUNTS", (40,))
    monkeypatch.setattr(search_mod, "SANITY_IMAGES", 1)
    from core.explain.masked_cases import masked_cases
    from core.registry.loader import load_with_counterpart, shipped_split, with_batch_runtime

    cases = masked_cases(FIXTURE, "val", 2, *shipped_split(), sample_seed=0)
    classifier, counterpart = load_with_counterpart("student")
    result = search_mod.search(with_batch_runtime(classifier), counterpart, cases, "val", "student")
    with pytest.raises(ValueError, match="never on the test split"):
        search_mod.search(classifier, counterpart, cases, "test", "student")
    assert set(result["results"]) == {"gradcam", "scorecam", "lime"}
    lime_rows = result["results"]["lime"]["candidates"]
    assert [r["settings"]["num_samples"] for r in lime_rows] == [60, 60, 40]  # colours first, then sample count
    assert result["results"]["lime"]["chosen"] in [r["settings"] for r in lime_rows]
    search_mod.record(result, "python -m core.explain.search --n 2")

    student, teacher = load_model("student"), load_model("teacher")
    chosen = result["results"]["lime"]["chosen"]
    e = explain(student, IMAGE, "lime")
    assert e.settings["hide"] == chosen["hide"] and e.settings["num_samples"] == chosen["num_samples"]
    assert "chosen by core.explain.search on 2 validation images" in describe_settings("lime", e.settings)
    layers = result["results"]["gradcam"]["chosen"]["layers"]
    assert explain(student, IMAGE, "gradcam").settings["target_layers"] == layers
    assert "built-in defaults" in describe_settings("lime", explain(teacher, IMAGE, "lime", num_samples=60).settings)
    overridden = explain(student, IMAGE, "lime", num_samples=40)
    assert overridden.settings["num_samples"] == 40 and "chosen_by" not in overridden.settings


def test_blurred_lime_background_is_the_blurred_view(models):
    e = explain(models["student"], IMAGE, "lime", num_samples=60, hide="blurred")
    assert e.settings["hide"] == "blurred" and e.heatmap.shape == IMAGE.size[::-1]


def test_search_skips_settings_that_fail_the_randomised_weights_check(monkeypatch):
    """The best-scoring setting whose map still looks like the randomised model's map is passed over."""
    from types import SimpleNamespace

    from core.explain import setting_search as search_mod

    corr = {"a": 0.8, "b": 0.1, "c": 0.0}
    monkeypatch.setattr(search_mod, "sanity_checks", lambda c, image, method, layers: {
        "randomized_weights_rank_corr": corr[layers], "other_class_rank_corr": 0.2})
    rows = [{"settings": {"layers": k}, "score": s, "seconds": 1.0} for k, s in (("c", 1.0), ("a", 3.0), ("b", 2.0))]
    torch_model = SimpleNamespace(module=object())
    chosen = search_mod.choose_sane(rows, torch_model, None, "scorecam", [SimpleNamespace(image=IMAGE)])
    assert chosen["chosen"] == {"layers": "b"} and chosen["passed"]
    assert [c["settings"]["layers"] for c in chosen["sanity_checked"]] == ["a", "b"]
    corr["b"] = corr["c"] = 0.9
    failed = search_mod.choose_sane(rows, torch_model, None, "scorecam", [SimpleNamespace(image=IMAGE)])
    assert failed["chosen"] == {"layers": "a"} and not failed["passed"]


def test_batched_lime_perturbations_equal_lime_s_own():
    """The batched perturbation builder draws the same samples and builds the same images as lime's loop."""
    import torch
    from lime import lime_image

    from core.explain.heatmaps import BatchedLimeImageExplainer

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    fudged = np.zeros_like(image) + 100
    segments = np.repeat(np.repeat(np.arange(16).reshape(4, 4), 6, axis=0), 6, axis=1)
    seen = {"ours": [], "lime": []}

    def recorder(name):
        def classifier_fn(batch):  # ours gets N x C x H x W tensors, lime N x H x W x 3 arrays
            seen[name].append(batch.permute(0, 2, 3, 1).numpy() if name == "ours" else batch.copy())
            return np.tile([0.3, 0.7], (len(batch), 1))
        return classifier_fn

    as_tensors = lambda views: torch.from_numpy(views).permute(0, 3, 1, 2)  # noqa: E731 (at the view's size)
    ours = BatchedLimeImageExplainer(as_tensors, 24, random_state=3).data_labels(
        image, fudged, segments, recorder("ours"), 50, batch_size=20)
    theirs = lime_image.LimeImageExplainer(random_state=3).data_labels(image, fudged, segments, recorder("lime"), 50,
                                                                       batch_size=20)
    assert np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1])
    batches = [(20, 24, 24, 3)] * 2 + [(10, 24, 24, 3)]
    assert [b.shape for b in seen["ours"]] == [b.shape for b in seen["lime"]] == batches
    assert all(np.array_equal(a, b) for a, b in zip(seen["ours"], seen["lime"]))


def test_lime_explains_the_prediction_s_own_input():
    """LIME's unperturbed sample is the tensor the model predicts on (one preprocessing path), not a resize of
    LIME's 224 px view."""
    import torch

    from core.data.preprocess import preprocess
    from tests.conftest import ROOT

    student = load_model("student", root=ROOT / "weights")
    cfg = student.config
    image = Image.open(sorted((ROOT / "assets" / "gallery").glob("*.jpg"))[2]).convert("RGB")
    batches = []
    batch_logits = student.batch_logits
    student.batch_logits = lambda x: batches.append(x.clone()) or batch_logits(x)
    explain(student, image, "lime", num_samples=100)
    assert torch.equal(batches[0][0], preprocess(image, cfg)[0])


def test_measured_scores_become_a_plain_caption_and_follow_the_settings(private_weights):
    """`core.explain --evaluate --record` stores each model file's scores; the map's caption turns them into one
    plain sentence; a new search (other settings) drops them; a re-calibrated copy carries them over."""
    from core.explain import __main__ as explain_cli
    from core.explain.chosen import carry_over, measured_scores, record_chosen
    from core.explain.heatmaps import plain_caption

    student = load_model("student")
    e = explain(student, IMAGE, "gradcam")
    assert "measured" not in e.settings and "not measured" in plain_caption("gradcam", e.settings, "melanoma")
    assert explain_cli.main(["--evaluate", "--data-dir", str(FIXTURE), "--split", "val", "--n", "2",
                             "--models", "student", "--methods", "gradcam", "--record"]) == 0
    measured = measured_scores("gradcam", student.sha256)
    assert measured["n"] == 2 and measured["split"] == "val" and "--record" in measured["command"]
    e = explain(student, IMAGE, "gradcam")
    caption = plain_caption("gradcam", e.settings, "melanoma")
    hits = round(measured["pointing_game"] * 2)
    assert "On 2 held-out images" in caption and f"inside the lesion in {hits} " in caption
    carry_over(student.sha256, "f" * 64, "re-calibrated")
    assert measured_scores("gradcam", "f" * 64)["carried_over"].startswith("re-calibrated")
    record_chosen(student.sha256, {"gradcam": {"layers": ["cnn.stages.0"]}}, {"summary": "searched again"})
    assert measured_scores("gradcam", student.sha256) is None
    assert explain_cli.main(["--evaluate", "--split", "train", "--record"]) == 2
