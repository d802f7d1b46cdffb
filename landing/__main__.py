from landing.cli import app

app(prog_name="landing")
