"""Words of a text, and statistics of generated text that tell how it reads without reading it:
distinct-1 and distinct-2, the share of repeated 4-grams, the share of its words that occur in
the training text, and the mean sentence length in words."""

import re
from collections import Counter

WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")  # letters, hyphenated compounds (кто-то) as one word
SENTENCE_END = re.compile(r"[.!?…]+")


def words(text):
    return WORD.findall(text.lower())


def ngrams(tokens, n):
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct(samples, n):
    """Distinct n-grams over all n-grams of the samples (each a list of words; no n-gram spans two samples)."""
    grams = [gram for sample in samples for gram in ngrams(sample, n)]
    return len(set(grams)) / len(grams) if grams else None


def repeated_share(samples, n=4):
    """The share of n-grams that occur more than once in their sample (a loop scores near 1)."""
    counts = [Counter(ngrams(sample, n)) for sample in samples]
    total = sum(sum(count.values()) for count in counts)
    return sum(c for count in counts for c in count.values() if c > 1) / total if total else None


def known_share(samples, vocabulary):
    """The share of the samples' words that are in `vocabulary` (invented words are not)."""
    every = [word for sample in samples for word in sample]
    return sum(word in vocabulary for word in every) / len(every) if every else None


def mean_sentence_words(texts):
    """Words per sentence; a sentence ends at . ! ? or … (or the text's end) and has at least one word."""
    lengths = [len(words(sentence)) for text in texts for sentence in SENTENCE_END.split(text)]
    lengths = [n for n in lengths if n]
    return sum(lengths) / len(lengths) if lengths else None


def text_statistics(texts, vocabulary):
    samples = [words(text) for text in texts]
    figures = {
        "distinct_1": distinct(samples, 1),
        "distinct_2": distinct(samples, 2),
        "repeated_4grams": repeated_share(samples, 4),
        "known_words": known_share(samples, vocabulary),
        "sentence_words": mean_sentence_words(texts),
    }
    return {
        "words": sum(map(len, samples)),
        **{key: None if value is None else round(value, 4) for key, value in figures.items()},
    }
