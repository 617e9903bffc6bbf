from wearcast.cli import app

app(prog_name="wearcast")
