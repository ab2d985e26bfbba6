-- Migration 1: the conversation store as of schema version 6 (the last release before numbered migrations).
-- A store from an earlier release first gets the columns it lacks (bot/storage/sqlite/legacy.py).
CREATE TABLE IF NOT EXISTS conversations (
    id          TEXT PRIMARY KEY,
    channel     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    handoff     INTEGER NOT NULL DEFAULT 0,
    handoff_summary TEXT,  -- for the person who takes over, written by the model after a handoff
    owner_state TEXT NOT NULL DEFAULT 'bot',  -- bot.conversation.state.Owner
    owner_agent TEXT,      -- the agent who owns it (owner_state 'agent')
    owner_trigger TEXT,    -- why it last left the bot
    owner_since REAL,      -- when it entered owner_state
    last_hold_at REAL,     -- the last holding message while queued
    slots TEXT,            -- JSON object: what the conversation has collected (an email address...)
    active_form TEXT       -- the form being filled (bot.actions.forms), if any
);
CREATE TABLE IF NOT EXISTS events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    kind            TEXT NOT NULL,  -- bot.conversation.state.EventKind
    actor           TEXT NOT NULL,  -- bot, customer, or the agent's name
    trigger         TEXT,
    text            TEXT,
    created_at      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    role            TEXT NOT NULL CHECK (role IN ('user', 'bot')),
    text            TEXT NOT NULL,
    created_at      REAL NOT NULL,
    answered_by     TEXT,
    source_id       TEXT,
    confidence      REAL,
    reason          TEXT,
    citations       TEXT,   -- JSON list of citations
    quick_replies   TEXT,   -- JSON list of suggested replies
    handoff         INTEGER NOT NULL DEFAULT 0,
    timings         TEXT,   -- JSON object of milliseconds per step
    metadata        TEXT,   -- JSON object from the channel
    client_message_id TEXT, -- the sender's id for a user turn, so a resent message is answered once
    reply_to        INTEGER REFERENCES turns(id),  -- for a bot turn: the user turn it answers
    kind            TEXT,   -- for a user turn: what the customer sent (bot.types.MessageKind)
    delivered_at    REAL,   -- for a bot turn: when its channel confirmed the send (NULL: not yet)
    delivery_owner  TEXT,   -- for a bot turn: the process (Pipeline.instance) sending it now
    author          TEXT,   -- for a reply written by a person (answered_by 'human'): the agent's name
    held            INTEGER NOT NULL DEFAULT 0  -- for a user turn: kept for a person, not for the bot to answer
);
CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns (conversation_id, id);
CREATE UNIQUE INDEX IF NOT EXISTS turns_by_client_id ON turns (conversation_id, client_message_id)
    WHERE client_message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS turns_by_reply_to ON turns (reply_to) WHERE reply_to IS NOT NULL;
CREATE INDEX IF NOT EXISTS turns_by_time ON turns (created_at);
CREATE INDEX IF NOT EXISTS events_by_conversation ON events (conversation_id, id);
CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations (owner_state, owner_since);
CREATE TABLE IF NOT EXISTS approvals (
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    turn_id         INTEGER REFERENCES turns(id),  -- NULL: every reply in the conversation
    approved_by     TEXT NOT NULL,
    approved_at     REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS approvals_once ON approvals (conversation_id, COALESCE(turn_id, 0));
