from methods.registry import Method


class NoTraining(Method):
    id = "base"
    description = "no training: the instruct model as it is (the reference row of every table)"
    trains = False

    def build_targets(self, ctx):
        return []
