"""Library messages during training, each matched narrowly by its text: one that explains
nothing is dropped, one that alarms without cause becomes a line that says what happened.
Every other message, warnings about the run included, still shows."""
import logging

from stages.common import log


class TiedWeightsNotice(logging.Filter):
    """GPT-2 ties lm_head to the input embeddings, so checkpoints do not store it and Trainer's
    resume warns that it is missing; one explanatory line replaces the warning."""

    MESSAGE = "There were missing keys in the checkpoint model loaded: ['lm_head.weight']"

    def filter(self, record):
        if record.getMessage().startswith(self.MESSAGE):
            log.info("train: lm_head.weight is tied to the input embeddings (not stored in checkpoints): restored from them")
            return False
        return True


class CompileOffGpuNotice(logging.Filter):
    """TrainingArguments warns that torch.compile mostly speeds up Ampere GPUs whenever it compiles
    elsewhere. The plan compiles on a CPU only where its probe measured compiling to be faster."""

    MESSAGE = "The speedups for torchdynamo mostly come with GPU Ampere or higher"

    def filter(self, record):
        return not record.getMessage().startswith(self.MESSAGE)


def install():
    logging.getLogger("transformers.trainer").addFilter(TiedWeightsNotice())
    logging.getLogger("transformers.training_args").addFilter(CompileOffGpuNotice())
