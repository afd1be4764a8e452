"""The data set the user works on, above `learn` and `labels`: what both the app and the CLI do
with an open folder, beyond labelling or training alone.

    lock           who has the folder open (`lock.json`); `held`: a command holds it, or refuses
    catalog        RunsCatalog: the folder's training runs and its active model
    predict_store  run_prediction: predict the folder and keep each batch (and its cells' embeddings) with its
                   labels; read them back
    suggestions    the next cells to label and a cell's look-alikes, from a model's stored results
    loop           Keep Learning: rounds that train on every current label and predict the folder again
"""
