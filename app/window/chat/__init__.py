"""The conversation in the window: its view, the composer and attachments, the saved chats, the turns."""
