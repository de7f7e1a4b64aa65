#!/usr/bin/env bash
# The README demo: every command on the files in sample_data/, outputs in demo_out/ (re-runnable: --force).
set -euo pipefail
BIN="${1:-.venv/bin}"
NLP="$BIN/nlptool"
cd "$(dirname "$0")/.."
mkdir -p demo_out
set -x

# CoSENT: fine-tune the bundled all-MiniLM-L6-v2 on 600 STS-B pairs, evaluate it, embed a few sentences
"$NLP" eval-sts sample_data/stsb_dev_sample.csv --metrics-out demo_out/stsb_dev_before.json --force
"$NLP" train-cosent --train sample_data/stsb_train_sample.csv --dev sample_data/stsb_dev_sample.csv \
  --out demo_out/minilm-cosent --force
"$NLP" eval-sts sample_data/stsb_dev_sample.csv --model demo_out/minilm-cosent --metrics-out demo_out/stsb_dev_after.json \
  --force
"$NLP" encode sample_data/sentences.txt --model demo_out/minilm-cosent -o demo_out/sentences.npy --force

# CAN on real predictions: logistic regressions on all-MiniLM-L6-v2 embeddings (see sample_data/README.md)
"$NLP" calibrate-can sample_data/sst2_preds.jsonl --labels negative,positive --label-col label \
  -o demo_out/sst2_can.jsonl --metrics-out demo_out/sst2_can_metrics.json --force
"$NLP" calibrate-can sample_data/agnews_preds.jsonl --labels World,Sports,Business,Sci/Tech --label-col label \
  --prior sample_data/agnews_prior.csv -o demo_out/agnews_can.jsonl --metrics-out demo_out/agnews_can_metrics.json --force

# Entropy normalisation: flatten SST-2 predictions to half the maximum entropy, from stdin
head -n 5 sample_data/sst2_preds.jsonl | "$NLP" entropy-normalize - --target-ratio 0.5 > demo_out/sst2_flat.jsonl
head -n 2 demo_out/sst2_flat.jsonl

# The gradient-norm inequality on 20 random ReLU MLPs x 8 inputs
"$NLP" gradcheck --layers 8,32,32,1 --activation relu --trials 20 --inputs 8 -o demo_out/gradcheck.jsonl \
  --metrics-out demo_out/gradcheck_metrics.json --force

# NSP-BERT zero-shot: give the bundled all-MiniLM-L6-v2 (which has no NSP head) one on a small corpus, then classify
# 100 SST-2 sentences by P(IsNext) of "It was great." / "It was terrible."; the embedding baseline; CAN on the result.
# (The corpus is tiny: this shows the workflow; BENCHMARKS.md has the adaptation on 13,000 news sentences.)
"$NLP" nsp-adapt --corpus sample_data/nsp_corpus.txt --out demo_out/minilm-nsp --epochs 2 --force
"$NLP" zero-shot sample_data/sst2_zero_shot.jsonl --labels-file sample_data/sst2_labels.yaml --position suffix \
  --model demo_out/minilm-nsp --label-col label -o demo_out/sst2_zs_nsp.jsonl --metrics-out demo_out/sst2_zs_nsp.json --force
# the same with contextual calibration (divide out the label prior the prompts give "N/A", "" and [MASK])
"$NLP" zero-shot sample_data/sst2_zero_shot.jsonl --labels-file sample_data/sst2_labels.yaml --position suffix \
  --model demo_out/minilm-nsp --calibrate content-free --label-col label -o demo_out/sst2_zs_nsp_cf.jsonl --force
"$NLP" -q zero-shot sample_data/sst2_zero_shot.jsonl --labels-file sample_data/sst2_labels.yaml --method embedding \
  --label-col label | "$NLP" calibrate-can - --labels negative,positive --label-col label -o demo_out/sst2_zs_emb_can.jsonl --force

# NER with Efficient GlobalPointer: convert token-span data (nested ORG ⊃ LOC), fine-tune the bundled all-MiniLM-L6-v2
# briefly (160 sentences x 6 epochs, about a minute on 2 cores), predict unlabelled texts, evaluate on held-out ones.
"$NLP" ner convert --from token-spans sample_data/ner_train_tokens.jsonl -o demo_out/ner_train.jsonl --force
"$NLP" ner train --train demo_out/ner_train.jsonl --dev sample_data/ner_dev.jsonl --out demo_out/minilm-ner \
  --epochs 6 --lr 3e-4 --force
"$NLP" ner predict sample_data/ner_texts.txt --model demo_out/minilm-ner -o demo_out/ner_pred.jsonl --force
head -n 2 demo_out/ner_pred.jsonl
"$NLP" ner eval sample_data/ner_dev.jsonl --model demo_out/minilm-ner --metrics-out demo_out/ner_dev_metrics.json --force

# kg-qa: Seq2Seq + trie-constrained decoding over an invented 35-triple KB (train a tiny char BART for ~300 steps,
# then answer with Su's settings: renormalised probabilities and look-ahead)
"$NLP" kg-qa train --kb sample_data/kgqa_kb.tsv --train sample_data/kgqa_train.jsonl --dev sample_data/kgqa_dev.jsonl \
  --out demo_out/kgqa --epochs 60 --d-model 64 --layers 2 --ffn 128 --batch-size 8 --lr 3e-3 --dropout 0 --force
"$NLP" kg-qa predict sample_data/kgqa_dev.jsonl --model demo_out/kgqa --renormalize --lookahead \
  -o demo_out/kgqa_dev_preds.jsonl --force
"$NLP" kg-qa eval sample_data/kgqa_dev.jsonl --predictions demo_out/kgqa_dev_preds.jsonl --metrics-out demo_out/kgqa_dev_metrics.json --force
"$NLP" kg-qa ask "白鹭是谁导演的？" --model demo_out/kgqa --renormalize --lookahead

# Text classification: fine-tune the bundled all-MiniLM-L6-v2 with a linear head on 200 SST-2 sentences, evaluate on
# the next 100, and send its probabilities through CAN with the prior of the training labels.
"$NLP" classify train --train sample_data/sst2_preds.jsonl --dev sample_data/sst2_zero_shot.jsonl --text-col sentence \
  --out demo_out/minilm-clf --epochs 5 --lr 1e-4 --force
"$NLP" classify eval sample_data/sst2_zero_shot.jsonl --text-col sentence --model demo_out/minilm-clf \
  --metrics-out demo_out/clf_dev_metrics.json --force
"$NLP" -q classify predict sample_data/sst2_zero_shot.jsonl --text-col sentence --model demo_out/minilm-clf \
  | "$NLP" calibrate-can - --labels negative,positive --prior-from sample_data/sst2_preds.jsonl --label-col label \
  -o demo_out/clf_can.jsonl --metrics-out demo_out/clf_can_metrics.json --force

# Multi-task: one encoder for the three tasks above (STS pairs, NER, SST-2 classes), the gradients combined by
# Su's normalise-then-sum; the single-task models' metrics.json give Δm. Then each task's folder works alone.
"$NLP" train-multitask --out demo_out/minilm-mtl --combine gradnorm-sum --steps 40 --batch-size 16 \
  --task sts=sts:sample_data/stsb_train_sample.csv:sample_data/stsb_dev_sample.csv \
  --task ner=ner:demo_out/ner_train.jsonl:sample_data/ner_dev.jsonl \
  --task sst2=classify:sample_data/sst2_preds.jsonl:sample_data/sst2_zero_shot.jsonl --text-col sentence \
  --baseline sts=demo_out/minilm-cosent/metrics.json --baseline ner=demo_out/minilm-ner/metrics.json \
  --baseline sst2=demo_out/minilm-clf/metrics.json --force
"$NLP" ner eval sample_data/ner_dev.jsonl --model demo_out/minilm-mtl/tasks/ner --force
"$NLP" classify eval sample_data/sst2_zero_shot.jsonl --text-col sentence --model demo_out/minilm-mtl/tasks/sst2 --force
