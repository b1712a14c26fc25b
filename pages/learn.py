"""Learn: commit to an answer on a held-out case, then compare it with the ground truth, the model and its maps."""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from core.classes import FULL_NAMES
from core.explain.heatmaps import METHOD_LABELS, overlay_heatmap
from core.explain.scores import load_mask
from core.learn.case_bank import CREDIT, load_case_bank
from core.learn.notes import REFERENCES, TEACHING_NOTES
from core.learn.quiz import BENIGN, MALIGNANT, QUIZ_SETS, Answer, case_order, model_answer, score_session, session_csv
from core.paths import PROJECT_ROOT
from pages.common import analysed, disclaimer, explanation_for, get_model, guarded, referral_line

CASE_DIR = PROJECT_ROOT / "assets" / "learn"
MODEL = "student"
METHODS = ("gradcam", "scorecam", "lime")


@st.cache_resource
def case_bank():
    return {c.case_id: c for c in load_case_bank(CASE_DIR)}


def quiz_state(set_name: str, seed: int) -> dict:
    """This session's quiz; a new set or seed starts a new one (nothing about learners leaves the session)."""
    state = st.session_state.get("learn")
    if state is None or (state["set"], state["seed"]) != (set_name, seed):
        order = [c.case_id for c in case_order(case_bank().values(), set_name, seed)]
        state = {"set": set_name, "seed": seed, "order": order, "position": 0, "answers": [], "revealed": False}
        st.session_state["learn"] = state
    return state


def label(code: str) -> str:
    return f"{FULL_NAMES[code]} ({code})"


def maps_for(classifier, key, image, target, mask, opacity):
    """{method label: overlay} for one target class, with the reference lesion border when known."""
    out = {}
    for method in METHODS:
        e = explanation_for(classifier, key, image, method, target)
        out[METHOD_LABELS[method]] = overlay_heatmap(image, e.heatmap, opacity, e.outline, mask)
    return out


def reveal(case, key, image, prediction, answer, quiz_set, classifier, presenter):
    st.markdown(f"### Ground truth: {label(case.dx)}")
    st.caption(f"Confirmed by {case.confirmation}. Age {case.age_text}, {case.sex or 'sex unknown'}, "
               f"{case.localization or 'site unknown'}.")
    scored_truth, scored_learner, scored_model = answer.scored(quiz_set)
    (st.success if scored_truth == scored_learner else st.error)(
        f"Your answer: **{label(answer.learner)}**"
        + (f", marked {answer.learner_malignancy}" if answer.learner_malignancy else "")
        + (" — correct." if scored_truth == scored_learner else " — not correct."))
    st.markdown(f"**Model ({MODEL})**: {label(answer.model)} — "
                + ("agrees with the ground truth." if scored_model == scored_truth else "disagrees with the ground truth.")
                + (" *Uncertain: " + "; ".join(prediction.reasons) + "*" if prediction.uncertain else ""))
    if not prediction.dermoscopic:
        st.warning("The model refused this real lesion image as unlike its training images (its input gate's "
                   "false alarm, about 3 in 1,000 real images): in the clinic it would give no answer. Its output "
                   "is shown here for teaching only.")
    referral_line(prediction)
    top = pd.DataFrame([{"Class": label(c), "Calibrated probability": f"{p:.1%}"} for c, p in prediction.top(3)])
    st.dataframe(top, hide_index=True, width="stretch")
    mask = load_mask(CASE_DIR / case.mask_file, image.size) if case.mask_file else None
    opacity = st.slider("Heatmap opacity", 0.0, 1.0, 0.5, 0.05, key="learn-opacity")
    targets = [case.dx] + ([prediction.label] if prediction.label != case.dx else [])
    for target in targets:
        which = "true class" if target == case.dx else "model's class"
        st.markdown(f"**What the model looked at for {label(target)}** ({which})")
        maps = maps_for(classifier, key, image, target, mask, opacity)
        if presenter and target == case.dx:
            step = st.select_slider("Presenter: step through", ["Original", *maps], key="learn-step")
            st.image(image if step == "Original" else maps[step], caption=step, width="stretch")
        else:
            cols = st.columns(4)
            cols[0].image(image, caption="Original", width="stretch")
            for col, (name, overlay) in zip(cols[1:], maps.items()):
                col.image(overlay, caption=name, width="stretch")
    if mask is not None:
        st.caption("Green line: the lesion border from the HAM10000 reference segmentation. Warm colours: "
                   "regions that raised the explained class's score; LIME outlines its top superpixels in white.")
    st.info(f"**Teaching note — {FULL_NAMES[case.dx]}.** {TEACHING_NOTES[case.dx]}")


def scoreboard(state, quiz_set):
    answers = [Answer(**a) for a in state["answers"]]
    if not answers:
        return
    score = score_session(answers, quiz_set)
    st.markdown(f"### Your score ({score['n']} case{'s' if score['n'] != 1 else ''})")
    table = pd.DataFrame([{"": who, "Accuracy": f"{s['accuracy']:.0%}", "Balanced accuracy": f"{s['balanced_accuracy']:.0%}"}
                          for who, s in (("You", score["learner"]), (f"Model ({MODEL})", score["model"]))])
    st.dataframe(table, hide_index=True, width="stretch")
    names = score["outcomes"]
    fig = px.imshow(np.array(score["confusion_matrix"]), x=names, y=names, text_auto=True,
                    labels=dict(x="your answer", y="ground truth"), color_continuous_scale="Blues")
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=30, b=10), title="Your confusion matrix")
    st.plotly_chart(fig, width="stretch")
    if score["misses"]:
        bank = case_bank()
        st.markdown("**Review my misses**")
        for case_id in score["misses"]:
            a = next(x for x in answers if x.case_id == case_id)
            with st.expander(f"{case_id}: you said {label(a.learner)}; it was {label(a.truth)}"):
                st.image(str(CASE_DIR / bank[case_id].file), width=300)
                st.caption(TEACHING_NOTES[a.truth])
    st.download_button("Download this session (CSV)", session_csv(answers, quiz_set),
                       file_name=f"dermadistill-learn-{quiz_set.name}-seed{state['seed']}.csv", mime="text/csv")


def render():
    st.title("Learn")
    disclaimer()
    st.caption("Commit to a diagnosis on a held-out case, then reveal the ground truth, the model's answer and "
               "what it looked at. Your answers stay in this browser session; nothing is stored on the server.")
    c1, c2, c3 = st.columns([2, 1, 1])
    set_name = c1.selectbox("Set", list(QUIZ_SETS), format_func=lambda s: QUIZ_SETS[s].title)
    seed = int(c2.number_input("Seed (same seed, same order)", 0, 10_000, 42))
    presenter = c3.toggle("Presenter mode", help="Large image; step through original and maps with one control")
    quiz_set = QUIZ_SETS[set_name]
    state = quiz_state(set_name, seed)
    st.caption(f"Set: {set_name}, seed {seed} — {len(state['order'])} cases in a fixed order.")
    classifier, error = get_model(MODEL)
    if error:
        st.error(error)
        return
    if state["position"] >= len(state["order"]):
        st.success("You have seen every case of this set. Change the seed or the set to start again.")
        scoreboard(state, quiz_set)
        return
    case = case_bank()[state["order"][state["position"]]]
    st.markdown(f"## Case {state['position'] + 1} of {len(state['order'])}")
    key, image, prediction = analysed(case.case_id, (CASE_DIR / case.file).read_bytes(), classifier)
    left, right = st.columns([3, 2] if presenter else [1, 1])
    with left:
        if not (presenter and state["revealed"]):
            st.image(image, caption=f"{case.case_id}", width="stretch")
    with right:
        if st.toggle("Show patient details", key=f"meta-{case.case_id}"):
            st.caption(f"Age {case.age_text}, {case.sex or 'sex unknown'}, site: {case.localization or 'unknown'}.")
        if not state["revealed"]:
            diagnosis = st.radio("Your diagnosis", quiz_set.classes, index=None, format_func=label,
                                 key=f"dx-{set_name}-{seed}-{case.case_id}")
            marked = st.radio("Benign or malignant? (optional)" if quiz_set.task == "diagnosis" else "Benign or malignant?",
                              [BENIGN, MALIGNANT], index=None, horizontal=True,
                              key=f"mal-{set_name}-{seed}-{case.case_id}")
            needs = diagnosis is None or (quiz_set.task == "malignancy" and marked is None)
            if st.button("Reveal", type="primary", disabled=needs, key=f"reveal-{set_name}-{seed}-{case.case_id}"):
                state["answers"].append(vars(Answer(case.case_id, case.dx, diagnosis, marked or "",
                                                    model_answer(prediction.probabilities, quiz_set))))
                state["revealed"] = True
                st.rerun()
        elif st.button("Next case", type="primary", key=f"next-{set_name}-{seed}-{case.case_id}"):
            state["position"] += 1
            state["revealed"] = False
            st.rerun()
    if state["revealed"]:
        reveal(case, key, image, prediction, Answer(**state["answers"][-1]), quiz_set, classifier, presenter)
    scoreboard(state, quiz_set)
    st.caption(CREDIT)
    with st.expander("Sources of the teaching notes"):
        for ref in REFERENCES:
            st.caption(ref)


guarded(render)
