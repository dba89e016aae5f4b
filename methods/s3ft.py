from methods.registry import Method


class S3FT(Method):
    id = "s3ft"
    description = "S3FT (Gupta et al. 2025): own answer if judged correct, else a judged paraphrase of gold, else gold"
    trains = True

    def build_targets(self, ctx):
        predictions = ctx.predictions(ctx.examples)
        # Paraphrase only where the model's own answer was rejected: that is all S3FT needs, and it halves the cost.
        failed = [ex for ex, pred in zip(ctx.examples, predictions) if not pred.accepted]
        paraphrases = dict(zip((ex["id"] for ex in failed), ctx.paraphrases(failed)))
        records = []
        for ex, pred in zip(ctx.examples, predictions):
            if pred.accepted:
                records.append(ctx.target(ex, pred))
            elif paraphrases[ex["id"]].accepted:
                records.append(ctx.target(ex, paraphrases[ex["id"]]))
            else:
                records.append(ctx.target(ex, ctx.gold(ex)))
        return records
