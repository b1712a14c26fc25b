"""Short teaching notes on each class's dermoscopic features, in our own words, with their sources.

Sources: pattern analysis (Pehamberger et al., J Am Acad Dermatol 1987; revised by Kittler et al.,
J Am Acad Dermatol 2016), the 3-point checklist (Soyer et al., Dermatology 2004), and the consensus
net meeting on dermoscopy (Argenziano et al., J Am Acad Dermatol 2003).
"""

REFERENCES = (
    "Argenziano G. et al. Dermoscopy of pigmented skin lesions: results of a consensus meeting via the Internet. "
    "J Am Acad Dermatol 2003;48:679-93.",
    "Soyer H.P. et al. Three-point checklist of dermoscopy. Dermatology 2004;208:27-31.",
    "Kittler H. et al. Standardization of terminology in dermoscopy/dermatoscopy: results of the third consensus "
    "conference of the International Society of Dermoscopy. J Am Acad Dermatol 2016;74:1093-1106.",
)

TEACHING_NOTES = {
    "akiec": "Actinic keratosis and intraepithelial carcinoma (Bowen's disease) are usually non-pigmented: look for "
             "a red 'strawberry' pseudonetwork around follicles with white-yellow keratotic plugs, scale, and in "
             "Bowen's disease glomerular (coiled) vessels in clusters. Pigmented variants can mimic lentigo maligna, "
             "so grey dots around follicles call for caution.",
    "bcc": "Basal cell carcinoma lacks a pigment network. Its hallmarks are sharp, branching (arborizing) vessels "
           "in focus, blue-grey ovoid nests and globules, leaf-like and spoke-wheel areas, ulceration and shiny "
           "white structures. One of these in a lesion without network points to BCC.",
    "bkl": "Benign keratosis-like lesions (seborrhoeic keratosis, solar lentigo, lichen planus-like keratosis): "
           "milia-like cysts, comedo-like openings, fissures and ridges ('brain-like'), a sharp 'moth-eaten' "
           "border and fingerprint-like lines. Regressing lichen planus-like keratoses show grey granules and "
           "are a known melanoma mimic.",
    "df": "Dermatofibroma: a central white scar-like patch surrounded by a fine, delicate peripheral pigment "
          "network; dotted vessels may sit in the centre. It dimples when pinched (a clinical sign, not visible "
          "in the image).",
    "mel": "Melanoma: look for asymmetry of colours and structures, an atypical network (thick, irregular lines), "
           "blue-white structures, irregular dots and globules, streaks or pseudopods at the edge, regression, "
           "and several colours. The 3-point checklist (asymmetry, atypical network, blue-white structures) "
           "recommends excision or referral when two of the three are present.",
    "nv": "Melanocytic nevi are the commonest lesion: symmetric in colour and structure, with one or two "
          "patterns, such as a regular network fading at the edge, regular globules, or a homogeneous brown-tan "
          "area. Few colours and no melanoma-specific structures. A solitary changing or 'ugly duckling' nevus "
          "deserves a second look.",
    "vasc": "Vascular lesions (cherry angioma, angiokeratoma, pyogenic granuloma): well-demarcated red, purple or "
            "blue-black lacunae (lagoons) separated by pale septa, with no pigment network. Dark lacunae with a "
            "whitish veil suggest angiokeratoma; a red homogeneous area with a white collarette, pyogenic granuloma.",
}
