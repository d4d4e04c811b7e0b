"""The original toolkit's evaluation module: perplexity, entropy, generation, diversity."""
from noisynn.evaluation import *
from noisynn.evaluation import (compute_distinct_n, compute_output_entropy, compute_perplexity,
                                compute_repetition_ratio, compute_vocabulary_richness, generate_text_samples,
                                get_ngrams)
