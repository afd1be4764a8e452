"""Training: the presenter (`feature`), fit() on a worker (`controller`), the curves (`history`,
`dashboard`, `log_text`), the Runs dock (`runs`, `runs_panel`), its dialogs (`train_dialog`,
`continue_dialog`, `failed_dialog`) and the warm-up imports (`warm_up`)."""
