"""What a trained network answers with: metrics, calibration of p(same), attribution among known hands (numpy only)."""
