from methods.registry import Method


class SDFT(Method):
    id = "sdft"
    description = ("SDFT (Yang et al. 2024): paraphrase every gold answer; "
                   "keep it if judged correct and clean, else gold")
    trains = True

    def build_targets(self, ctx):
        paraphrases = ctx.paraphrases(ctx.examples)
        return [ctx.target(ex, para if para.accepted else ctx.gold(ex)) for ex, para in zip(ctx.examples, paraphrases)]
