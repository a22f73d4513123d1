"""Answer normalisation of the official VQA scorers (eval.md section 4.2), quirks included.

Two official implementations exist and differ in small ways:

* ``evalai_process(s)`` is the m4c / EvalAI ``EvalAIAnswerProcessor`` used by LLaVA's TextVQA scorer
  and by its VQAv2/VizWiz submission converters: lowercase, delete ``,`` and ``?``, ``'s`` → `` 's``,
  then punctuation, periods, number words, articles and contractions.
* ``vqaeval_process(s)`` is GT-Vision-Lab ``vqaEval.py``'s ``processPunctuation`` +
  ``processDigitArticle`` (no up-front tokenisation; its digit-comma-digit test is ``(\\d)(,)(\\d)``).

Both delete at most 32 periods: the official code passes ``re.UNICODE`` (= 32) as ``count``.
"""

from __future__ import annotations

import re

__all__ = [
    "ARTICLES",
    "CONTRACTIONS",
    "NUMBER_MAP",
    "PUNCTUATIONS",
    "evalai_process",
    "process_digit_article",
    "process_punctuation",
    "vqaeval_process",
]

# The 120-entry table of the official scorers, bugs included ("somebody'd" -> "somebodyd"; keys "Im",
# "Ive", "Id've", "I'dve" never match because words are lowercased before the lookup).
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip

NUMBER_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATIONS = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip

# The intended look-behind `(?<!\d)` is spelled `(?!<=\d)`, a no-op: a period after a digit is removed too.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_M4C_COMMA = re.compile(r"(?<=\d)(\,)+(?=\d)")
_VQAEVAL_COMMA = re.compile(r"(\d)(\,)(\d)")
_PERIOD_COUNT = 32  # re.UNICODE passed positionally as `count` by the official code


def process_punctuation(text: str, comma_pattern: re.Pattern[str] = _M4C_COMMA) -> str:
    """Delete or space out the 21 punctuation characters, then delete up to 32 periods."""
    has_digit_comma = comma_pattern.search(text) is not None
    out = text
    for p in PUNCTUATIONS:
        # The test looks at the *input* string, not at the partially processed one.
        if (p + " " in text or " " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """Lowercase, number words → digits, drop articles, restore contractions, single spaces."""
    words = []
    for word in text.lower().split():
        word = NUMBER_MAP.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def evalai_process(text: str) -> str:
    """m4c ``EvalAIAnswerProcessor.__call__`` (TextVQA scorer, VQAv2/VizWiz submission converters)."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text, _M4C_COMMA))


def vqaeval_process(text: str) -> str:
    """GT-Vision-Lab ``vqaEval.py``: ``processDigitArticle(processPunctuation(text))``."""
    return process_digit_article(process_punctuation(text, _VQAEVAL_COMMA))
