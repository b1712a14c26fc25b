"""Quiz sets, a fixed case order per (set, seed), and scoring of the learner beside the model.

A set says which cases it draws and what is scored: the diagnosis (among the set's choices) or
benign/malignant. The model answers the same cases: its top class among the set's choices, and
"malignant" when that class is one of the suspicious ones (the app's malignancy flag).
"""

import csv
import io
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import accuracy_score, recall_score

from core.classes import CLASSES, SUSPICIOUS

MALIGNANT, BENIGN = "malignant", "benign"


@dataclass(frozen=True)
class QuizSet:
    name: str
    title: str
    classes: tuple  # which cases the set draws, and the diagnoses offered
    task: str  # "diagnosis" or "malignancy": what is scored

    @property
    def outcomes(self) -> tuple:
        return self.classes if self.task == "diagnosis" else (BENIGN, MALIGNANT)

    @property
    def asks_malignancy(self) -> bool:
        """Ask benign/malignant beside the diagnosis? Not where two choices already say it (melanoma vs nevus)."""
        return self.task == "malignancy" or len(self.classes) > 2


QUIZ_SETS = {s.name: s for s in (
    QuizSet("all", "All seven classes", CLASSES, "diagnosis"),
    QuizSet("mel-vs-nv", "Melanoma vs nevus", ("mel", "nv"), "diagnosis"),
    QuizSet("malignant-vs-benign", "Malignant vs benign", CLASSES, "malignancy"),
)}


def malignancy(dx: str) -> str:
    return MALIGNANT if dx in SUSPICIOUS else BENIGN


def case_order(cases, set_name: str, seed: int) -> list:
    """The set's cases in a fixed order for (set, seed): a class can follow one projected sequence."""
    quiz_set = QUIZ_SETS[set_name]
    pool = sorted((c for c in cases if c.dx in quiz_set.classes), key=lambda c: c.case_id)
    return [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]


def model_answer(probabilities: dict, quiz_set: QuizSet) -> str:
    """The model's top class among the set's choices."""
    return max(quiz_set.classes, key=lambda c: probabilities[c])


@dataclass
class Answer:
    case_id: str
    truth: str  # dx
    learner: str  # the learner's diagnosis
    learner_malignancy: str  # "benign", "malignant" or "" (not marked)
    model: str  # the model's diagnosis among the set's choices

    def scored(self, quiz_set: QuizSet) -> tuple:
        """(truth, learner, model) in the set's outcome space."""
        if quiz_set.task == "diagnosis":
            return self.truth, self.learner, self.model
        return malignancy(self.truth), self.learner_malignancy or malignancy(self.learner), malignancy(self.model)


MARK_CODES = {"x": "", "b": BENIGN, "m": MALIGNANT}


def encode_answers(answers) -> str:
    """A quiz's answers as a short text for the page's address: two characters per answered case, the
    diagnosis's class index and the benign/malignant mark (b, m, or x for none). Kept in the browser's
    URL, a quiz survives a refresh while the server stores nothing about the learner."""
    marks = {v: k for k, v in MARK_CODES.items()}
    return "".join(f"{CLASSES.index(a.learner)}{marks[a.learner_malignancy]}" for a in answers)


def decode_answers(text: str, quiz_set: QuizSet, n_cases: int) -> list:
    """[(diagnosis, mark), ...] from `encode_answers` text; ValueError for text this quiz cannot hold."""
    if len(text) % 2 or len(text) // 2 > n_cases:
        raise ValueError("answers do not fit this quiz")
    pairs = []
    for index, mark in zip(text[::2], text[1::2]):
        if not index.isdigit() or int(index) >= len(CLASSES) or mark not in MARK_CODES:
            raise ValueError(f"unreadable answer {index + mark!r}")
        dx = CLASSES[int(index)]
        if dx not in quiz_set.classes or (quiz_set.task == "malignancy" and not MARK_CODES[mark]):
            raise ValueError(f"answer {index + mark!r} is not one this set asks for")
        pairs.append((dx, MARK_CODES[mark]))
    return pairs


def _accuracies(truth, answer) -> dict:
    """Accuracy and balanced accuracy (mean recall over the outcomes present so far)."""
    if not truth:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan")}
    return {"accuracy": float(accuracy_score(truth, answer)),
            "balanced_accuracy": float(recall_score(truth, answer, labels=sorted(set(truth)), average="macro",
                                                    zero_division=0))}


def score_session(answers, quiz_set: QuizSet) -> dict:
    """Learner and model accuracy and balanced accuracy on the answered cases, the learner's confusion
    matrix (rows truth, columns answer, in the set's outcome order) and the learner's misses."""
    scored = [a.scored(quiz_set) for a in answers]
    truth = [s[0] for s in scored]
    learner = [s[1] for s in scored]
    model = [s[2] for s in scored]
    outcomes = list(quiz_set.outcomes)
    if quiz_set.task == "diagnosis":
        outcomes += sorted({a for a in learner if a not in outcomes})  # a diagnosis outside the set's choices
    matrix = [[sum(t == row and a == col for t, a in zip(truth, learner)) for col in outcomes] for row in outcomes]
    return {
        "n": len(answers),
        "learner": _accuracies(truth, learner),
        "model": _accuracies(truth, model),
        "outcomes": outcomes,
        "confusion_matrix": matrix,
        "misses": [a.case_id for a, (t, la, _) in zip(answers, scored) if t != la],
    }


def session_csv(answers, quiz_set: QuizSet) -> str:
    """The session as CSV (one row per answered case); kept client-side, never stored on the server."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["set", *Answer.__dataclass_fields__, "learner_correct", "model_correct"])
    writer.writeheader()
    for a in answers:
        truth, learner, model = a.scored(quiz_set)
        writer.writerow({"set": quiz_set.name, **asdict(a), "learner_correct": truth == learner,
                         "model_correct": truth == model})
    return buf.getvalue()
