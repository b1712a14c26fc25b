"""Learn: the case bank (held-out only), fixed-seed sets, scoring, and a full quiz round in AppTest."""

import pytest

from core.classes import FULL_NAMES
from core.learn.case_bank import CONFIRMATION, load_case_bank
from core.learn.quiz import BENIGN, MALIGNANT, QUIZ_SETS, Answer, case_order, score_session, session_csv
from core.service.pdf_report import DISCLAIMER
from tests.conftest import ROOT
from tests.test_app import app, texts

BANK = ROOT / "assets" / "learn"


@pytest.fixture(scope="module")
def cases():
    return load_case_bank(BANK)


def test_bank_has_about_ten_cases_per_class_with_neutral_names(cases):
    per_class = {dx: sum(c.dx == dx for c in cases) for dx in FULL_NAMES}
    assert all(8 <= n <= 12 for n in per_class.values()), per_class
    for c in cases:
        assert (BANK / c.file).is_file() and c.file == f"{c.case_id}.jpg"
        assert c.dx not in c.file and c.image_id not in c.file
        assert c.dx_type in CONFIRMATION
    assert len({c.lesion_id for c in cases}) == len(cases)  # one image per lesion


def test_no_case_is_a_training_or_validation_image(cases, ham10000_dir):
    from core.data.ham10000 import load_ham10000
    from core.data.split import recompute_split
    from core.registry.loader import read_manifest

    student = read_manifest(ROOT / "weights")["models"]["student"]
    split = recompute_split(load_ham10000(ham10000_dir), student["seed"], student["split_fingerprint"])
    ids = {c.image_id for c in cases}
    assert ids <= set(split["test"])
    assert not ids & (set(split["train"]) | set(split["val"]))


@pytest.mark.parametrize("set_name", sorted(QUIZ_SETS))
def test_fixed_seed_order_is_stable_and_sets_hold_only_their_classes(cases, set_name):
    first = [c.case_id for c in case_order(cases, set_name, 42)]
    assert first == [c.case_id for c in case_order(list(reversed(cases)), set_name, 42)]
    assert first != [c.case_id for c in case_order(cases, set_name, 7)]
    allowed = QUIZ_SETS[set_name].classes
    chosen = case_order(cases, set_name, 42)
    assert {c.dx for c in chosen} <= set(allowed)
    assert len(chosen) == sum(c.dx in allowed for c in cases)


def test_scoring_learner_and_model_on_the_same_cases():
    quiz = QUIZ_SETS["all"]
    answers = [Answer("a", "mel", "mel", "", "nv"), Answer("b", "nv", "mel", "", "nv"),
               Answer("c", "nv", "nv", "", "nv"), Answer("d", "bcc", "bkl", "", "bcc")]
    score = score_session(answers, quiz)
    assert score["learner"]["accuracy"] == 0.5
    assert score["learner"]["balanced_accuracy"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert score["model"]["accuracy"] == 0.75
    assert score["model"]["balanced_accuracy"] == pytest.approx((0 + 1 + 1) / 3)
    assert score["misses"] == ["b", "d"]
    m = dict(zip(score["outcomes"], score["confusion_matrix"]))
    assert m["nv"][score["outcomes"].index("mel")] == 1 and sum(map(sum, score["confusion_matrix"])) == 4
    assert session_csv(answers, quiz).count("\n") == 5


def test_malignancy_set_scores_benign_or_malignant():
    quiz = QUIZ_SETS["malignant-vs-benign"]
    answers = [Answer("a", "mel", "nv", MALIGNANT, "bcc"), Answer("b", "nv", "df", "", "mel")]
    score = score_session(answers, quiz)
    assert score["outcomes"] == [BENIGN, MALIGNANT]
    assert score["learner"]["accuracy"] == 1.0  # marked malignant; the unmarked df counts as benign
    assert score["model"]["accuracy"] == 0.5


def test_a_full_round_answer_reveal_score(private_weights):
    at = app("pages/learn.py")
    state = at.session_state["learn"]
    case = {c.case_id: c for c in load_case_bank(BANK)}[state["order"][0]]
    before = texts(at).replace(DISCLAIMER, "")  # the fixed disclaimer names histopathology; it is not the case's
    assert "Ground truth" not in before
    assert FULL_NAMES[case.dx] not in before and case.confirmation not in before
    reveal = next(b for b in at.button if b.label == "Reveal")
    assert reveal.disabled  # no answer yet
    wrong = next(c for c in QUIZ_SETS["all"].classes if c != case.dx)
    at.radio(key=f"dx-all-42-{case.case_id}").set_value(wrong)
    at.run()
    next(b for b in at.button if b.label == "Reveal").click()
    at.run()
    assert not at.exception, at.exception
    after = texts(at)
    assert "Ground truth" in after and FULL_NAMES[case.dx] in after and case.confirmation in after
    assert "Teaching note" in after
    assert at.session_state["learn"]["answers"][0]["learner"] == wrong
    assert "Your score (1 case)" in after and "Review my misses" in after
    next(b for b in at.button if b.label == "Next case").click()
    at.run()
    assert "Case 2 of" in texts(at)


def learn_page(query: dict = None):
    """The Learn page in a new session, opened at an address with `query` (a bookmark or a refresh)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "pages" / "learn.py"), default_timeout=180)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def answer_and_reveal(at, choose):
    state = at.session_state["learn"]
    case_id = state["order"][len(state["answers"])]
    dx = {c.case_id: c for c in load_case_bank(BANK)}[case_id].dx
    at.radio(key=f"dx-{state['set']}-{state['seed']}-{case_id}").set_value(choose(dx))
    at.run()
    next(b for b in at.button if b.label == "Reveal").click()
    at.run()
    assert not at.exception, at.exception
    return case_id, dx


def test_learn_survives_a_refresh_through_the_address(private_weights):
    """Answers, the revealed case and the set live in the address: a new session at that address (a refresh,
    a bookmark) resumes the quiz; the server keeps nothing."""
    at = learn_page()
    first, dx1 = answer_and_reveal(at, lambda dx: dx)
    next(b for b in at.button if b.label == "Next case").click()
    at.run()
    second, dx2 = answer_and_reveal(at, lambda dx: next(c for c in QUIZ_SETS["all"].classes if c != dx))
    query = dict(at.query_params)
    assert query["set"] == "all" and query["revealed"] == "1" and len(query["answers"]) == 4
    again = learn_page(query)
    state = again.session_state["learn"]
    assert [a["case_id"] for a in state["answers"]] == [first, second] and state["revealed"]
    assert [a["learner"] == a["truth"] for a in state["answers"]] == [True, False]
    assert "Case 2 of" in texts(again) and "Ground truth" in texts(again) and "Your score (2 cases)" in texts(again)
    broken = learn_page({"set": "all", "seed": "42", "answers": "9z"})
    assert any("could not be read" in w.value for w in broken.warning)
    assert broken.session_state["learn"]["answers"] == [] and "Case 1 of" in texts(broken)


def test_changing_the_set_asks_before_discarding_answers(private_weights):
    at = learn_page()
    answer_and_reveal(at, lambda dx: dx)
    at.selectbox(key="learn-set").set_value("mel-vs-nv")
    at.run()
    assert any("discards your 1 answer" in w.value for w in at.warning)
    assert at.session_state["learn"]["set"] == "all" and len(at.session_state["learn"]["answers"]) == 1
    next(b for b in at.button if b.label == "Keep my quiz").click()
    at.run()
    assert at.selectbox(key="learn-set").value == "all" and len(at.session_state["learn"]["answers"]) == 1
    at.selectbox(key="learn-set").set_value("mel-vs-nv")
    at.run()
    next(b for b in at.button if b.label == "Start the new quiz").click()
    at.run()
    state = at.session_state["learn"]
    assert state["set"] == "mel-vs-nv" and not state["answers"] and dict(at.query_params)["set"] == "mel-vs-nv"
    assert not [r for r in at.radio if "Benign or malignant" in r.label]  # the two choices already say it


def test_presenter_mode_shows_the_answer_only_at_its_step(private_weights):
    at = learn_page()
    next(b for b in at.button if b.label == "Presenter mode").click()
    at.run()
    state = at.session_state["learn"]
    case = {c.case_id: c for c in load_case_bank(BANK)}[state["order"][0]]
    seen = []
    for step in range(5):
        body = texts(at)
        seen.append(FULL_NAMES[case.dx] in body or case.confirmation in body)
        assert not at.exception, at.exception
        assert dict(at.query_params)["presenter"] == "1"
        next(b for b in at.button if b.label == "Next ▶").click()
        at.run()
    assert seen == [False, False, False, False, True]
    assert at.session_state["learn"]["case"] == 1 and at.session_state["learn"]["step"] == 0
    assert dict(at.query_params)["case"] == "2"
    resumed = learn_page(dict(at.query_params))
    assert resumed.session_state["learn"]["presenter"] and resumed.session_state["learn"]["case"] == 1
    next(b for b in resumed.button if b.label == "Exit presenter mode").click()
    resumed.run()
    assert "Case 1 of" in texts(resumed) and "presenter" not in dict(resumed.query_params)
