"""A FastAPI app on PostgreSQL through SQLAlchemy and psycopg 3, shaped like the full-stack template.

Served under ``opentelemetry-instrument`` (no qm-otel code) or, with ``QM_OTEL_TEST_SETUP=1``, calling
``qm_otel.setup()`` before the engine is made (what the README asks of the in-code path). The URL comes
from ``DATABASE_URL``.
"""

import os

from fastapi import FastAPI, HTTPException
from sqlalchemy import Integer, String, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

if os.environ.get("QM_OTEL_TEST_SETUP") == "1":
    import qm_otel

    qm_otel.setup()


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)


engine = create_engine(os.environ["DATABASE_URL"], pool_pre_ping=False)
Base.metadata.create_all(engine)
app = FastAPI()
if os.environ.get("QM_OTEL_TEST_SETUP") == "1":
    qm_otel.instrument_app(app)


@app.post("/users/{email}")
def add_user(email: str) -> dict[str, int]:
    with Session(engine) as session:
        user = User(email=email)
        session.add(user)
        session.commit()
        return {"id": user.id}


@app.get("/users/{email}")
def find_user(email: str) -> dict[str, int]:
    with Session(engine) as session:
        user = session.scalars(select(User).where(User.email == email)).first()
        if user is None:
            raise HTTPException(404)
        return {"id": user.id}


@app.get("/report")
def report() -> dict[str, int]:
    """A statement written with its values inline: the spans must not carry them."""
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM users WHERE email = 'ann@example.com' OR id > 73412985"))
        return {"count": int(count.scalar_one())}
