"""The seven HAM10000 diagnostic classes, in the one fixed order every model and file uses."""

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

FULL_NAMES = {
    "akiec": "Actinic keratoses / intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesions",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevi",
    "vasc": "Vascular lesions",
}

# Grouped as "suspicious - consider referral/biopsy" by the app and the predict CLI.
SUSPICIOUS = frozenset({"mel", "bcc", "akiec"})

CLASS_TO_INDEX = {c: i for i, c in enumerate(CLASSES)}
