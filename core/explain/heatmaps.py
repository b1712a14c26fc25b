"""Grad-CAM, Score-CAM (pytorch-grad-cam) and LIME (lime) explanations for any loaded model.

Thread safety: CAM methods hook a private deep copy of the model, one per thread and model, made on the
thread's first explanation and kept while the model lives, so the shared, cached model never carries
hooks and two explanations in two threads cannot see each other's activations. Model
parameters are frozen; gradients flow from a requires-grad input instead, so no .grad is left.
The int8 ONNX model has no gradients: Grad-CAM runs on its fp32 counterpart (and says so);
Score-CAM takes activation maps from the fp32 counterpart and scores every masked input with the
int8 model itself; LIME runs on the int8 model directly. A torch model with an ONNX Runtime twin
attached (`core.registry.loader.with_batch_runtime`) likewise scores Score-CAM's masked inputs and
LIME's samples in ONNX Runtime, the fastest runtime measured; Grad-CAM always runs on torch.
"""

import copy
import threading
import time
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from lime import lime_image
from lime.wrappers.scikit_image import SegmentationAlgorithm
from PIL import Image, ImageFilter
from pytorch_grad_cam import GradCAM, ScoreCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from core.data.preprocess import preprocess, resize_uint8, to_model_tensor
from core.explain.chosen import chosen_settings, measured_scores

LIME_VIEW_SIZE = 224  # SLIC superpixels are found on a 224 px view, so they follow lesion structure


@dataclass
class Explanation:
    method: str
    model: str
    target: str
    heatmap: np.ndarray  # H x W float32 in [0, 1], at the input image's own size
    overlay: Image.Image
    settings: dict
    seconds: float
    notes: list = field(default_factory=list)
    outline: np.ndarray = None  # LIME: boolean H x W border of the top positive superpixels


LESION_OUTLINE_RGB = (0, 255, 64)  # reference lesion border: green, apart from LIME's white and the jet colours


def overlay_heatmap(image: Image.Image, heatmap: np.ndarray, opacity: float = 0.5, outline=None,
                    lesion_mask=None) -> Image.Image:
    """Jet-coloured heatmap blended over the image (opacity = heatmap weight), outline drawn in white and,
    when a reference lesion mask is given, its border in green, so a viewer sees whether the map is on it."""
    from skimage.segmentation import find_boundaries

    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    blended = show_cam_on_image(rgb, heatmap, use_rgb=True, image_weight=1.0 - opacity)
    if outline is not None:
        blended[outline] = 255
    if lesion_mask is not None:
        blended[find_boundaries(lesion_mask, mode="thick")] = LESION_OUTLINE_RGB
    return Image.fromarray(blended)


def _to_image_size(cam: np.ndarray, size) -> np.ndarray:
    """Resize a [0, 1] map to (width, height) and keep it in [0, 1]."""
    resized = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize(size, Image.BILINEAR))
    return np.clip(resized, 0.0, 1.0).astype(np.float32)


class _CallCounter(torch.nn.Module):
    """Wraps a module to report each forward call to a progress callback."""

    def __init__(self, module, total: int, progress):
        super().__init__()
        self.module, self.total, self.progress, self.calls = module, total, progress, 0

    def forward(self, x):
        out = self.module(x)
        self.calls += 1
        if self.progress:
            self.progress(min(self.calls, self.total), self.total)
        return out


class _RuntimeScorer(torch.nn.Module):
    """First call: the torch model (so CAM hooks capture activation maps). Later calls, the masked
    inputs: the classifier's batched runtime (the int8 model, or the fp32 model's ONNX Runtime twin)."""

    def __init__(self, float_module, classifier):
        super().__init__()
        self.float_module, self.classifier = float_module, classifier
        self.captured = False

    def forward(self, x):
        if not self.captured:
            self.captured = True
            return self.float_module(x)
        return self.classifier.batch_logits(x.detach())


_per_thread = threading.local()


@dataclass
class _PrivateCopy:
    module: torch.nn.Module
    layer_channels: dict = field(default_factory=dict)  # (layer names, input shape) -> output channels


def _private_copy(shared: torch.nn.Module) -> _PrivateCopy:
    """This thread's frozen deep copy of a shared module, made once (copying the model on every explanation
    cost more than a Grad-CAM); it goes when the shared module does (weak keys: a promoted model's old copy too)."""
    copies = getattr(_per_thread, "copies", None)
    if copies is None:
        copies = _per_thread.copies = weakref.WeakKeyDictionary()
    private = copies.get(shared)
    if private is None:
        private = copies[shared] = _PrivateCopy(copy.deepcopy(shared).requires_grad_(False).eval())
    return private


def _cam_model(classifier, float_classifier, method):
    """(this thread's private copy of the module to explain, notes)."""
    notes = []
    if classifier.module is not None:
        private = _private_copy(classifier.module)
    else:
        if float_classifier is None or float_classifier.module is None:
            raise ValueError(f"{method} on {classifier.name} needs its fp32 counterpart (float_classifier)")
        private = _private_copy(float_classifier.module)
        if method == "gradcam":
            notes.append(f"Grad-CAM computed on the fp32 {float_classifier.name} model: "
                         f"the int8 model {classifier.name} has no gradients")
        else:
            notes.append(f"activation maps from the fp32 {float_classifier.name}; every masked input "
                         f"scored by the int8 model {classifier.name}")
    return private, notes


def _run_cam(cam_cls, classifier, image, target, float_classifier, progress, batch_size=None, layers=None):
    """`layers`: module names inside the hybrid model (default: the model's own `cam_target_layers`)."""
    method = "gradcam" if cam_cls is GradCAM else "scorecam"
    private, notes = _cam_model(classifier, float_classifier, method)
    module, hybrid = private.module, private.module.model
    cfg = classifier.config
    x = preprocess(image, cfg)
    layers = [hybrid.get_submodule(n) for n in layers] if layers else hybrid.cam_target_layers()
    model = module
    if method == "scorecam":
        if classifier.module is None or classifier.batch_session is not None:
            model = _RuntimeScorer(module, classifier)
        calls = 1 + sum(-(-c // batch_size) for c in _layer_channels(private, layers, x))
        model = _CallCounter(model, calls, progress)
    else:
        x.requires_grad_(True)  # gradients reach the activations without touching parameters
    with cam_cls(model=model, target_layers=layers, reshape_transform=hybrid.cam_reshape_transform()) as cam:
        if batch_size:
            cam.batch_size = batch_size
        grayscale = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]
    settings = {"target_layers": [_layer_name(hybrid, layer) for layer in layers]}
    if batch_size:
        settings["batch_size"] = batch_size
    return grayscale, settings, notes


def _layer_channels(private: _PrivateCopy, layers, x) -> list:
    """Output channels of each layer, to size the progress bar: one dry forward under temporary hooks, the
    first time for these layers and input shape."""
    key = (tuple(id(layer) for layer in layers), tuple(x.shape))
    if key not in private.layer_channels:
        private.layer_channels[key] = _measure_layer_channels(private.module.model, layers, x)
    return private.layer_channels[key]


def _measure_layer_channels(hybrid, layers, x) -> list:
    shapes = {}

    def recorder(k):
        def hook(module, inputs, output):  # returns None: the output is left untouched
            shapes.setdefault(k, output.shape)
        return hook

    handles = [layer.register_forward_hook(recorder(k)) for k, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            hybrid.predict(x.detach())
    finally:
        for handle in handles:
            handle.remove()
    return [shapes[k][1] if len(shapes[k]) == 4 else shapes[k][-1] for k in range(len(layers))]


def _layer_name(hybrid, layer) -> str:
    for name, module in hybrid.named_modules():
        if module is layer:
            return name
    return type(layer).__name__


def explain_gradcam(classifier, image, target, progress=None, float_classifier=None, layers=None):
    return _run_cam(GradCAM, classifier, image, target, float_classifier, progress, layers=layers)


def explain_scorecam(classifier, image, target, progress=None, float_classifier=None, batch_size=64, layers=None):
    return _run_cam(ScoreCAM, classifier, image, target, float_classifier, progress, batch_size=batch_size,
                    layers=layers)


def lime_batch_to_model(batch: np.ndarray, cfg) -> torch.Tensor:
    """N x H x W x 3 views (LIME's image and its fill) -> normalised model input, resized in one vectorised call
    (antialiased bicubic, rounded to 8-bit like PIL's resize)."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(cfg.img_size, cfg.img_size), mode="bicubic", antialias=True, align_corners=False)
    return to_model_tensor(x.clamp_(0, 255).round_(), cfg)


LIME_BLUR_RADIUS = LIME_VIEW_SIZE / 16  # wipes out lesion structure, keeps the local colour


LIME_HIDE = {  # what a switched-off superpixel becomes (lime fills its masked pixels from this value or array)
    "black": lambda view: 0,
    "image_mean": lambda view: tuple(float(v) for v in view.reshape(-1, 3).mean(axis=0)),
    "segment_mean": lambda view: None,  # lime's own default: each superpixel's mean colour
    "blurred": lambda view: np.asarray(Image.fromarray(view).filter(ImageFilter.GaussianBlur(LIME_BLUR_RADIUS))),
}


def nearest_resize(labels: np.ndarray, size: int) -> np.ndarray:
    """An H x W label map sampled at size x size pixel centres (nearest neighbour: labels stay labels)."""
    rows = ((np.arange(size) + 0.5) * labels.shape[0] / size).astype(int)
    cols = ((np.arange(size) + 0.5) * labels.shape[1] / size).astype(int)
    return labels[rows[:, None], cols[None, :]]


class BatchedLimeImageExplainer(lime_image.LimeImageExplainer):
    """lime's explainer with its perturbed samples built directly as model input: the view, its hidden-superpixel
    fill and the superpixel map are brought to the model's input size once (`to_model`: N x H x W x 3 views ->
    N x C x size x size tensors), then each batch is one torch.where between the two. The same random draws as
    lime's loop over samples and superpixels, without a resize per sample; `classifier_fn` receives tensors.
    `shown`: the unperturbed image exactly as the model sees it when it predicts (C x size x size), so LIME
    explains the prediction's own input; default: the view through `to_model`."""

    def __init__(self, to_model, size: int, shown=None, **kwargs):
        super().__init__(**kwargs)
        self.to_model, self.size, self.shown = to_model, size, shown

    def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10):
        n_features = np.unique(segments).shape[0]
        data = self.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
        data[0, :] = 1  # the first sample is the image itself, as in lime
        shown, hidden = self.to_model(np.stack([image, fudged_image])).contiguous()  # torch.where is slower on strides
        if self.shown is not None:
            shown = self.shown.contiguous()
        superpixels = nearest_resize(segments, self.size)
        labels = []
        for start in range(0, num_samples, batch_size):
            keep = torch.from_numpy(data[start:start + batch_size].astype(bool)[:, superpixels])[:, None]
            labels.extend(classifier_fn(torch.where(keep, shown, hidden)))
        return data, np.array(labels)


def explain_lime(classifier, image, target, progress=None, float_classifier=None, num_samples=600,
                 n_segments=40, seed=0, batch_size=100, hide="black"):
    """LIME over SLIC superpixels.

    SLIC rather than quickshift: dermoscopic lesions are smooth colour regions with soft borders,
    where quickshift yields a scale-dependent, often huge number of ragged segments; SLIC gives a
    fixed budget (`n_segments`) of compact superpixels that follow the lesion border, so the
    explanation is comparable across images and fast enough for the app.
    """
    cfg = classifier.config
    view = resize_uint8(image, LIME_VIEW_SIZE)
    total = -(-num_samples // batch_size)
    calls = {"n": 0}

    def classifier_fn(x):
        logits = classifier.batch_logits(x).float()
        calls["n"] += 1
        if progress:
            progress(min(calls["n"], total), total)
        return torch.softmax(logits, dim=1).numpy()

    segmenter = SegmentationAlgorithm("slic", n_segments=n_segments, compactness=10, sigma=1, start_label=0,
                                      random_seed=seed)
    explainer = BatchedLimeImageExplainer(lambda views: lime_batch_to_model(views, cfg), cfg.img_size,
                                          shown=preprocess(image, cfg)[0],
                                          random_state=seed)
    exp = explainer.explain_instance(view, classifier_fn, labels=(target,), top_labels=None,
                                     hide_color=LIME_HIDE[hide](view),
                                     num_samples=num_samples, batch_size=batch_size, segmentation_fn=segmenter,
                                     random_seed=seed)
    weights = dict(exp.local_exp[target])
    segment_weights = np.array([max(weights.get(s, 0.0), 0.0) for s in range(exp.segments.max() + 1)])
    heat = segment_weights[exp.segments]
    heat = heat / heat.max() if heat.max() > 0 else heat
    top = [int(s) for s, w in sorted(weights.items(), key=lambda kv: -kv[1]) if w > 0][:5]
    settings = {"seed": seed, "num_samples": num_samples, "hide": hide,
                "segmentation": f"slic(n_segments={n_segments}, compactness=10, sigma=1)",
                "top_segments": top}
    return heat.astype(np.float32), settings, [], exp.segments, top


def describe_settings(method: str, settings: dict) -> str:
    """One line naming the settings an explanation was made with and how they were chosen (captions, reports)."""
    if method == "lime":
        text = (f"{settings.get('segmentation', '')}, {settings.get('num_samples')} samples, hidden superpixels "
                f"{settings.get('hide', 'black').replace('_', ' ')}, seed {settings.get('seed')}")
    else:
        text = "target layers " + " + ".join(settings.get("target_layers", []))
    return f"{text}; {settings.get('chosen_by', 'built-in defaults (not searched for this model)')}"


def plain_caption(method: str, settings: dict, class_name: str) -> str:
    """One plain sentence under a map: what warm colours mean, and how far to trust the map (its measured lesion
    overlap on held-out images, when measured for this model file)."""
    what = {"lime": "The outlined, warm patches are the parts of the image that most raised",
            "gradcam": "Warm colours mark the regions that most raised",
            "scorecam": "Warm colours mark the regions that most raised"}[method]
    text = f"{what} the model's score for {class_name}."
    m = settings.get("measured")
    if not m:
        return text + " Its agreement with lesion borders was not measured for this model: a rough guide only."
    hits = round(m["pointing_game"] * m["n"])
    return (text + f" On {m['n']} held-out images with a reference lesion border, its hottest point fell inside "
            f"the lesion in {hits} ({m['pointing_game']:.0%}). It shows what the model used, not where disease is.")


METHODS = {"gradcam": explain_gradcam, "scorecam": explain_scorecam, "lime": explain_lime}
METHOD_LABELS = {"gradcam": "Grad-CAM", "scorecam": "Score-CAM", "lime": "LIME"}


def explain(classifier, image: Image.Image, method: str, target=None, opacity: float = 0.5, progress=None,
            float_classifier=None, **method_settings) -> Explanation:
    """Explain `classifier`'s score for `target` (class index or code; default: predicted) on `image`, with
    the settings `core.explain.search` chose for this model file (see core.explain.chosen) unless
    `method_settings` override them."""
    from skimage.segmentation import find_boundaries

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    cfg = classifier.config
    if target is None:
        target = int(classifier.logits(preprocess(image, cfg)).argmax())
    elif isinstance(target, str):
        target = list(cfg.classes).index(target)
    chosen, provenance = chosen_settings(method, classifier.sha256, getattr(float_classifier, "sha256", None))
    start = time.perf_counter()
    result = METHODS[method](classifier, image, target, progress=progress, float_classifier=float_classifier,
                             **{**chosen, **method_settings})
    heat, settings, notes = result[:3]
    if provenance and not method_settings:
        settings["chosen_by"] = provenance["summary"]
    measured = None if method_settings else measured_scores(method, classifier.sha256)
    if measured:  # scores of this file's maps as made here (a new search of its settings drops them)
        settings["measured"] = measured
    heatmap = _to_image_size(heat, image.size)
    outline = None
    if method == "lime":  # outline the top positive superpixels
        segments, top = result[3], result[4]
        seg_full = np.asarray(Image.fromarray(segments.astype(np.int32)).resize(image.size, Image.NEAREST))
        outline = find_boundaries(np.isin(seg_full, top), mode="thick")
    overlay = overlay_heatmap(image, heatmap, opacity, outline)
    return Explanation(method, classifier.name, cfg.classes[target], heatmap, overlay, settings,
                       time.perf_counter() - start, notes, outline)
