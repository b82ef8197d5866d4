"""Training data: synthetic degradations, their labels, descriptions, token shards, datasets.

degradations.py   Real-ESRGAN's second-order pipeline (the one module that imports basicsr)
labels.py         blur / noise severities -> "Medium blur, small noise."
captions.py       description manifests and captioning models
prepare.py        HQ folders -> degraded pairs -> token shards (scripts/prepare_data.py)
datasets.py       shard dataset and length-grouped batches; paired LR/HR folders
"""
