"""Publishing: model cards, push to and pull from a Hub (huggingface.co or any Hub-compatible server).

A sibling of `hfdistill.stages` and `hfdistill.hubserver` (none of the three imports another): it knows Hub URLs,
not how the embedded server is started — `hfdistill.hub` combines the two.
"""
