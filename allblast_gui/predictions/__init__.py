"""Predictions: the presenter (`feature`), predict_iter streamed onto the rows and Grad-CAM
(`controller`), Model ▸ Predict… (`predict_dialog`) and the Patients dock (`patients_panel`,
`patient_summary`)."""
