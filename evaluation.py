"""The original toolkit's evaluation module: perplexity, entropy, generation, diversity."""
from noisynn.evaluation import *  # noqa: F401,F403
from noisynn.evaluation import (compute_distinct_n, compute_output_entropy, compute_perplexity,  # noqa: F401
                                compute_repetition_ratio, compute_vocabulary_richness, generate_text_samples,
                                get_ngrams)
