from traffic.cli import app

app()
