"""Learn: commit to an answer on a held-out case, then compare it with the ground truth, the model and its maps.

The quiz lives in the page's address (set, seed, answers, revealed; in presenter mode the case and step), so
a refresh or a bookmark resumes it and the server keeps nothing about learners.
"""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from core.classes import FULL_NAMES
from core.explain.heatmaps import METHOD_LABELS, overlay_heatmap
from core.explain.scores import load_mask
from core.learn.case_bank import CREDIT, load_case_bank
from core.learn.notes import REFERENCES, TEACHING_NOTES
from core.learn.quiz import (BENIGN, MALIGNANT, QUIZ_SETS, Answer, case_order, decode_answers, encode_answers,
                             model_answer, score_session, session_csv)
from core.paths import PROJECT_ROOT
from pages.common import analysed, disclaimer, explanation_for, get_model, guarded, referral_line

CASE_DIR = PROJECT_ROOT / "assets" / "learn"
MODEL = "student"
METHODS = ("gradcam", "scorecam", "lime")
DEFAULT_SET, DEFAULT_SEED = "all", 42
MATRIX_AFTER = 5  # answers before the confusion matrix says anything
PRESENTER_STEPS = ("Case", *(METHOD_LABELS[m] for m in METHODS), "Answer")
PRESENTER_WIDTH = 3  # times the image's own width at most: larger looks blurry on a projector
PRESENTER_CSS = """<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], header[data-testid="stHeader"] {display: none;}
.block-container {padding-top: 1rem;}
</style>"""


@st.cache_resource
def case_bank():
    return {c.case_id: c for c in load_case_bank(CASE_DIR)}


def label(code: str) -> str:
    return f"{FULL_NAMES[code]} ({code})"


def analysed_case(case, classifier):
    return analysed(case.case_id, (CASE_DIR / case.file).read_bytes(), classifier)


def new_quiz(set_name: str, seed: int) -> dict:
    order = [c.case_id for c in case_order(case_bank().values(), set_name, seed)]
    return {"set": set_name, "seed": seed, "order": order, "answers": [], "revealed": False,
            "presenter": False, "case": 0, "step": 0}


def quiz_from_url(classifier) -> dict:
    """The quiz the address describes (a bookmark or a refresh); a fresh one if it has none or is unreadable."""
    q = st.query_params
    set_name = q.get("set", DEFAULT_SET)
    try:
        seed = int(q.get("seed", DEFAULT_SEED))
        if set_name not in QUIZ_SETS or not 0 <= seed <= 10_000:
            raise ValueError("unknown set or seed")
        state = new_quiz(set_name, seed)
        bank = case_bank()
        for case_id, (learner, mark) in zip(state["order"], decode_answers(q.get("answers", ""), QUIZ_SETS[set_name],
                                                                           len(state["order"]))):
            _, _, prediction = analysed_case(bank[case_id], classifier)
            state["answers"].append(vars(Answer(case_id, bank[case_id].dx, learner, mark,
                                                model_answer(prediction.probabilities, QUIZ_SETS[set_name]))))
        state["revealed"] = q.get("revealed") == "1" and bool(state["answers"])
        state["presenter"] = q.get("presenter") == "1"
        state["case"] = min(max(int(q.get("case", 1)) - 1, 0), len(state["order"]) - 1)
        state["step"] = PRESENTER_STEPS.index(q["step"]) if q.get("step") in PRESENTER_STEPS else 0
    except (ValueError, KeyError) as exc:
        st.warning(f"This address's quiz could not be read ({exc}); starting a new quiz.")
        state = new_quiz(DEFAULT_SET, DEFAULT_SEED)
    return state


def save_to_url(state) -> None:
    """Write the quiz into the address bar (no rerun): a refresh or a bookmark comes back here. Every change to
    the quiz ends in a callback or `st.rerun()`, so writing it as each run starts keeps the address current."""
    params = {"set": state["set"], "seed": str(state["seed"])}
    if state["answers"]:
        params["answers"] = encode_answers(Answer(**a) for a in state["answers"])
    if state["revealed"]:
        params["revealed"] = "1"
    if state["presenter"]:
        params.update(presenter="1", case=str(state["case"] + 1), step=PRESENTER_STEPS[state["step"]])
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)


def position(state) -> int:
    """The learner's current case: the last answered one while it is revealed, else the next one."""
    return len(state["answers"]) - (1 if state["revealed"] else 0)


def maps_for(classifier, key, image, target, mask, opacity):
    """{method label: overlay} for one target class, with the reference lesion border when known."""
    out = {}
    for method in METHODS:
        e = explanation_for(classifier, key, image, method, target)
        out[METHOD_LABELS[method]] = overlay_heatmap(image, e.heatmap, opacity, e.outline, mask)
    return out


def case_mask(case, image):
    return load_mask(CASE_DIR / case.mask_file, image.size) if case.mask_file else None


def gate_note(prediction):
    if not prediction.dermoscopic:
        st.warning("The model refused this real lesion image as unlike its training images (its input gate's "
                   "false alarm, about 3 in 1,000 real images): in the clinic it would give no answer. Its output "
                   "is shown here for teaching only.")


def map_caption(mask):
    st.caption("Warm colours: regions that raised the explained class's score; LIME outlines its top superpixels "
               "in white." + (" Green line: the lesion border from the HAM10000 reference segmentation."
                              if mask is not None else ""))


def reveal(case, key, image, prediction, answer, quiz_set, classifier):
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
    gate_note(prediction)
    referral_line(prediction)
    top = pd.DataFrame([{"Class": label(c), "Calibrated probability": f"{p:.1%}"} for c, p in prediction.top(3)])
    st.dataframe(top, hide_index=True, width="stretch")
    mask = case_mask(case, image)
    opacity = st.slider("Heatmap opacity", 0.0, 1.0, 0.5, 0.05, key="learn-opacity")
    targets = [case.dx] + ([prediction.label] if prediction.label and prediction.label != case.dx else [])
    for target in targets:
        which = "true class" if target == case.dx else "model's class"
        st.markdown(f"**What the model looked at for {label(target)}** ({which})")
        maps = maps_for(classifier, key, image, target, mask, opacity)
        cols = st.columns(4)
        cols[0].image(image, caption="Original", width="stretch")
        for col, (name, overlay) in zip(cols[1:], maps.items()):
            col.image(overlay, caption=name, width="stretch")
    map_caption(mask)
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
    if score["n"] >= MATRIX_AFTER:
        names = score["outcomes"]
        fig = px.imshow(np.array(score["confusion_matrix"]), x=names, y=names, text_auto=True,
                        labels=dict(x="your answer", y="ground truth"), color_continuous_scale="Blues")
        side = 160 + 45 * len(names)
        fig.update_layout(height=side, width=side + 120, margin=dict(l=10, r=10, t=30, b=10),
                          title="Your confusion matrix")
        st.plotly_chart(fig, width="content")
    else:
        st.caption(f"Your confusion matrix appears after {MATRIX_AFTER} answers.")
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


def choose_quiz(state):
    """Set and seed pickers. A change with answers given asks first: starting over discards them."""
    for widget, value in (("learn-set", state["set"]), ("learn-seed", state["seed"])):
        st.session_state.setdefault(widget, value)
    c1, c2, c3 = st.columns([2, 1, 1])
    set_name = c1.selectbox("Set", list(QUIZ_SETS), format_func=lambda s: QUIZ_SETS[s].title, key="learn-set")
    seed = int(c2.number_input("Seed (same seed, same order)", 0, 10_000, key="learn-seed"))
    c3.button("Presenter mode", on_click=lambda: state.update(presenter=True, case=position(state), step=0),
              help="A clean full-width view for teaching: one case at a time, maps and answer step by step")
    if (set_name, seed) == (state["set"], state["seed"]):
        return
    if not state["answers"]:
        st.session_state["learn"] = new_quiz(set_name, seed)
        st.rerun()

    def keep():
        st.session_state["learn-set"], st.session_state["learn-seed"] = state["set"], state["seed"]

    def start():
        st.session_state["learn"] = new_quiz(set_name, seed)

    n = len(state["answers"])
    st.warning(f"Start a new quiz ({QUIZ_SETS[set_name].title}, seed {seed})? This discards your {n} "
               f"answer{'s' if n != 1 else ''} (download them below first if you want to keep them).")
    c1, c2 = st.columns(2)
    c1.button("Start the new quiz", on_click=start, key="learn-confirm-new")
    c2.button("Keep my quiz", on_click=keep, type="primary", key="learn-keep")


def learner_view(state, classifier):
    disclaimer()
    st.caption("Commit to a diagnosis on a held-out case, then reveal the ground truth, the model's answer and "
               "what it looked at. Your answers stay in this browser (in the page's address, so a refresh or a "
               "bookmark resumes the quiz); nothing is stored on the server.")
    choose_quiz(state)
    quiz_set = QUIZ_SETS[state["set"]]
    st.caption(f"Set: {state['set']}, seed {state['seed']} — {len(state['order'])} cases in a fixed order.")
    here = position(state)
    if here >= len(state["order"]):
        st.success("You have seen every case of this set. Change the seed or the set to start again.")
        scoreboard(state, quiz_set)
        return
    case = case_bank()[state["order"][here]]
    st.markdown(f"## Case {here + 1} of {len(state['order'])}")
    key, image, prediction = analysed_case(case, classifier)
    left, right = st.columns([1, 1])
    left.image(image, caption=f"{case.case_id}", width="stretch")
    with right:
        if st.toggle("Show patient details", key=f"meta-{case.case_id}"):
            st.caption(f"Age {case.age_text}, {case.sex or 'sex unknown'}, site: {case.localization or 'unknown'}.")
        if not state["revealed"]:
            tag = f"{state['set']}-{state['seed']}-{case.case_id}"
            diagnosis = st.radio("Your diagnosis", quiz_set.classes, index=None, format_func=label, key=f"dx-{tag}")
            marked = None
            if quiz_set.asks_malignancy:
                marked = st.radio("Benign or malignant?" + (" (optional)" if quiz_set.task == "diagnosis" else ""),
                                  [BENIGN, MALIGNANT], index=None, horizontal=True, key=f"mal-{tag}")
            needs = diagnosis is None or (quiz_set.task == "malignancy" and marked is None)
            if st.button("Reveal", type="primary", disabled=needs, key=f"reveal-{tag}"):
                state["answers"].append(vars(Answer(case.case_id, case.dx, diagnosis, marked or "",
                                                    model_answer(prediction.probabilities, quiz_set))))
                state["revealed"] = True
                st.rerun()
    if state["revealed"]:
        reveal(case, key, image, prediction, Answer(**state["answers"][-1]), quiz_set, classifier)
        if st.button("Next case", type="primary", key=f"next-{case.case_id}", shortcut="Right",
                     help="Keyboard: right arrow"):
            state["revealed"] = False
            st.rerun()
    scoreboard(state, quiz_set)


def step_to(state, delta: int) -> None:
    """Presenter: the next or previous step, across cases (Answer -> next case's Case)."""
    flat = state["case"] * len(PRESENTER_STEPS) + state["step"] + delta
    flat = min(max(flat, 0), len(state["order"]) * len(PRESENTER_STEPS) - 1)
    state["case"], state["step"] = divmod(flat, len(PRESENTER_STEPS))


def presenter_view(state, classifier):
    """One case at a time, image first; one control steps through Case, the three maps, then the Answer."""
    st.markdown(PRESENTER_CSS, unsafe_allow_html=True)
    case = case_bank()[state["order"][state["case"]]]
    c = st.columns([1, 5, 1, 2, 2], vertical_alignment="center")
    c[0].button("◀ Back", on_click=step_to, args=(state, -1), shortcut="Left", key="present-back",
                help="Keyboard: left arrow", width="stretch")
    chosen = c[1].segmented_control("Step", PRESENTER_STEPS, default=PRESENTER_STEPS[state["step"]],
                                    key=f"present-step-{state['case']}-{state['step']}", label_visibility="collapsed")
    if chosen and PRESENTER_STEPS.index(chosen) != state["step"]:
        state["step"] = PRESENTER_STEPS.index(chosen)
        st.rerun()
    c[2].button("Next ▶", on_click=step_to, args=(state, 1), shortcut="Right", key="present-next", type="primary",
                help="Keyboard: right arrow", width="stretch")
    c[3].markdown(f"**Case {state['case'] + 1} of {len(state['order'])}**")
    c[4].button("Exit presenter mode", on_click=lambda: state.update(presenter=False), key="present-exit",
                width="stretch")
    key, image, prediction = analysed_case(case, classifier)
    step = PRESENTER_STEPS[state["step"]]
    width = min(PRESENTER_WIDTH * image.width, 900)
    mask = case_mask(case, image)
    if step == "Case":
        st.image(image, width=width)
        st.caption(f"Age {case.age_text}, {case.sex or 'sex unknown'}, site: {case.localization or 'unknown'}.")
    elif step == "Answer":
        left, right = st.columns([3, 2])
        left.image(image, width=min(width, 600))
        with right:
            st.markdown(f"## {label(case.dx)}")
            st.caption(f"Confirmed by {case.confirmation}. Age {case.age_text}, {case.sex or 'sex unknown'}, "
                       f"{case.localization or 'site unknown'}.")
            if prediction.label:
                st.markdown(f"**Model ({MODEL})**: {label(prediction.label)}, {prediction.confidence:.0%}"
                            + (" — uncertain" if prediction.uncertain else ""))
            gate_note(prediction)
            referral_line(prediction)
        st.info(f"**Teaching note — {FULL_NAMES[case.dx]}.** {TEACHING_NOTES[case.dx]}")
    else:
        target = prediction.label or case.dx
        method = next(m for m in METHODS if METHOD_LABELS[m] == step)
        e = explanation_for(classifier, key, image, method, target)
        st.image(overlay_heatmap(image, e.heatmap, 0.5, e.outline, mask), width=width)
        st.caption(f"{step}: where the model looked for its own top answer (named at the Answer step). ")
        map_caption(mask)
    st.caption("Decision support and education software, not a diagnostic device. " + CREDIT)


def render():
    classifier, error = get_model(MODEL)
    if error:
        st.title("Learn")
        st.error(error)
        return
    if "learn" not in st.session_state:
        st.session_state["learn"] = quiz_from_url(classifier)
    state = st.session_state["learn"]
    save_to_url(state)  # before the slow maps draw, so a refresh meanwhile keeps the latest answer
    if state["presenter"]:
        presenter_view(state, classifier)
    else:
        st.title("Learn")
        learner_view(state, classifier)
        st.caption(CREDIT)
        with st.expander("Sources of the teaching notes"):
            for ref in REFERENCES:
                st.caption(ref)


guarded(render)
