from methods.sft import SFT


class TokenMatchedSFT(SFT):
    """SFT with S3FT's training budget. S3FT's targets (the model's own, often longer, answers) can hold several
    times the tokens of the gold answers, so S3FT vs SFT compares targets and budget at once; this control trains
    on the same gold answers as SFT for as many trained tokens as S3FT's targets hold (issue 17)."""

    id = "sft_matched"
    description = "SFT on the gold answers, trained for as many target tokens as S3FT's targets hold (budget control)"
    trains = True
    trained_tokens_of = "s3ft"
