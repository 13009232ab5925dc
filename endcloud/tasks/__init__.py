"""Shop tasks beyond answering (LLaSA's shopping-assistant tasks) and a ShopBench-style evaluation.

    from endcloud.tasks import generate_tasks, read_items, run_shopbench, HFTaskModel
    ts = generate_tasks(pack, teacher=default_teacher(shop="shop/"), logs=chats)    # items in ShopBench's format
    report = run_shopbench(read_items("development.json"), HFTaskModel.load(base, adapter))

Modules:
    items      TaskItem: a ShopBench row (input_field, output_field, task_type, metric, …) + a response to train on
    generate   TASKS: attribute NER, product QA, comparison, multiple choice (products, policies), intent,
               sentiment, zh↔en product names, recommendation ranking / retrieval / chat — from a shop pack,
               its orders and its chat logs
    checks     a checker per task (every item is checked before anything trains or is judged on it)
    metrics    ShopBench's parsers and metrics (accuracy, hit@3, NDCG, micro-F1, ROUGE-L, sentence similarity,
               BLEU) + endcloud's `fact` and `grounded-recommendation`; chance levels
    shopbench  the harness: a TaskModel (generate + log-likelihood of the listed options / candidates, for
               multiple choice, ranking and retrieval), per-task/type/overall report
    mix        dialogue examples from the pack and the replay mix for multi-task training
    classify   intent + sentiment of a customer message (CLASSIFIERS: lexicon | ngram), for serving
    recommend  grounded recommendations from the catalog (in stock only)
    serving    ShopAssistant: what the server's turn asks of this room

CLI: `endcloud eval shopbench FILE`, `endcloud tasks generate PACK -o FILE`. Bench: `bench/bench_tasks.py`.
Importing this package loads no model and no torch.
"""

from endcloud.tasks.classify import CLASSIFIERS, Analysis, LexiconClassifier, NgramClassifier, load_classifier
from endcloud.tasks.items import DEFAULT_METRIC, TASK_TYPES, TaskItem, read_items, write_items
from endcloud.tasks.metrics import METRICS, chance_level, score_answers

__all__ = [
    "CLASSIFIERS", "DEFAULT_METRIC", "METRICS", "TASK_TYPES", "Analysis", "LexiconClassifier", "NgramClassifier",
    "TaskItem", "chance_level", "load_classifier", "read_items", "score_answers", "write_items",
]


def __getattr__(name: str):
    # the heavier modules on first use, so `import endcloud.tasks` stays light for the server
    lazy = {"generate_tasks": "generate", "TASKS": "generate", "TaskSet": "generate", "Checker": "checks",
            "Recommender": "recommend", "run_shopbench": "shopbench", "HFTaskModel": "shopbench",
            "ShopBenchReport": "shopbench", "chat_set": "mix", "mix_with_replay": "mix", "ShopAssistant": "serving"}
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(f"endcloud.tasks.{lazy[name]}"), name)
    raise AttributeError(f"module 'endcloud.tasks' has no attribute {name!r}")
