"""Opening folders: the presenter (`feature`), loading a folder off the GUI thread (`dataset`), which
folders deserve a question first (`folders`) and what is said about a folder once open (`notices`)."""
